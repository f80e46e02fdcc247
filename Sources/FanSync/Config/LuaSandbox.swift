import CLua

/// A Lua value copied out of the config's Lua state (the state is closed after loading).
indirect enum LuaValue: Equatable, Sendable {
    case string([UInt8])
    case integer(Int64)
    case number(Double)
    case boolean(Bool)
    case table(LuaTable)
    /// One of `default.rsync`, `default.rsyncssh`, `default.rssh`, `default.direct`.
    case preset(String)
    case function
    /// Anything else (userdata, a thread, a table that contains itself): its description.
    case other(String)

    /// "a string (\"x\")", "the number 3", "a table", ... for error messages.
    var kindDescription: String {
        switch self {
        case .string(let b): return "the string \"\(SyncPath.displayString(b))\""
        case .integer(let i): return "the number \(i)"
        case .number(let d): return "the number \(d)"
        case .boolean(let b): return "the boolean \(b)"
        case .table(let t): return t.array.isEmpty && !t.fields.isEmpty ? "a table with keys" : "a table"
        case .preset(let p): return "default.\(p)"
        case .function: return "a function"
        case .other(let what): return what
        }
    }

    var text: String? {
        if case .string(let b) = self { return String(decoding: b, as: UTF8.self) }
        return nil
    }
}

/// A Lua table: its sequence `1...n` and its string keys; any other key is listed in `oddKeys`.
struct LuaTable: Equatable, Sendable {
    var array: [LuaValue] = []
    var fields: [String: LuaValue] = [:]
    var oddKeys: [String] = []
}

/// What the config's `sync{}` and `settings{}` calls recorded.
struct LuaRecord: Sendable {
    enum Kind: String, Sendable { case sync, settings, settingsFields, settingsAssigned }
    var kind: Kind
    /// The chunk id (see `LuaSandbox.chunks`) and line of the call, when Lua knows them.
    var chunk: String?
    var line: Int?
    var value: LuaValue
}

/// One chunk the sandbox ran: the config itself or a module it required.
struct LuaChunk: Sendable {
    var path: String
    var text: [UInt8]
}

/// A Lua 5.4 state with the config sandbox: only `settings`, `sync`, `default`, string/table/
/// math/utf8, `os.getenv/time/date/clock`, `print` (to stderr) and the harmless base functions.
/// No io, no os.execute/remove/exit, no dofile/loadfile, `load` of text only, and `require`
/// only of modules in the config's directory. Runs on one thread, then is closed.
final class LuaSandbox {
    private let L: OpaquePointer
    private var api: Int32 = 0
    static let memoryLimit = 256 << 20
    static let instructionLimit: Int32 = 500_000_000
    static let mainChunkId = "fansync-config"

    init(directory: String) throws {
        guard let state = clua_newstate(LuaSandbox.memoryLimit) else {
            throw ConfigError(file: directory, message: "cannot create a Lua state (out of memory)")
        }
        L = state
        luaL_openlibs(L)
        let prelude = Array(LuaSandbox.prelude.utf8)
        var status = prelude.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) {
                luaL_loadbufferx(L, $0.baseAddress, $0.count, "=fansync-sandbox", "t")
            }
        }
        if status == LUA_OK {
            push(Array(directory.utf8))
            clua_push_realpath(L)
            status = clua_pcall(L, 2, 1, 0)
        }
        if status != LUA_OK {
            let message = popString() ?? "unknown error"
            throw ConfigError(file: directory, message: "internal error setting up the Lua sandbox: \(message)")
        }
        api = lua_gettop(L)
    }

    deinit { clua_close(L) }

    /// Runs a chunk in the sandbox; returns Lua's error message when it fails.
    func run(source: [UInt8], path: String, instructionLimit: Int32 = LuaSandbox.instructionLimit) -> String? {
        lua_getfield(L, api, "run")
        push(source)
        push(Array(path.utf8))
        clua_set_instruction_limit(L, instructionLimit)
        let status = clua_pcall(L, 2, 0, 0)
        clua_set_instruction_limit(L, 0)
        clua_set_memory_limit(L, Int.max)
        if status != LUA_OK {
            if status == LUA_ERRMEM { clua_pop(L, 1); return "the config uses too much memory (over \(LuaSandbox.memoryLimit >> 20) MiB)" }
            return popString() ?? "error object is not a string"
        }
        return nil
    }

    /// The recorded `sync{}` and `settings` calls, in order.
    func records() -> [LuaRecord] {
        lua_getfield(L, api, "collect")
        guard clua_pcall(L, 0, 1, 0) == LUA_OK else { clua_pop(L, 1); return [] }
        defer { clua_pop(L, 1) }
        let list = lua_gettop(L)
        var out: [LuaRecord] = []
        let n = lua_rawlen(L, list)
        guard n > 0 else { return out }
        for i in 1...Int64(n) {
            lua_rawgeti(L, list, i)
            let r = lua_gettop(L)
            lua_getfield(L, r, "kind")
            let kind = LuaRecord.Kind(rawValue: popString() ?? "") ?? .sync
            lua_getfield(L, r, "chunk")
            let chunk = popString()
            lua_getfield(L, r, "line")
            let line = lua_isinteger(L, -1) != 0 ? Int(lua_tointegerx(L, -1, nil)) : nil
            clua_pop(L, 1)
            lua_getfield(L, r, "value")
            let value = read(lua_gettop(L))
            clua_pop(L, 2)
            out.append(LuaRecord(kind: kind, chunk: chunk, line: line.flatMap { $0 > 0 ? $0 : nil }, value: value))
        }
        return out
    }

    /// Every chunk that ran, by chunk id (the main config is `mainChunkId`).
    func chunks() -> [String: LuaChunk] {
        lua_getfield(L, api, "chunks")
        let table = lua_gettop(L)
        defer { clua_pop(L, 1) }
        var out: [String: LuaChunk] = [:]
        lua_pushnil(L)
        while lua_next(L, table) != 0 {
            // key at -2, value (a plain table { path, text }) at -1
            if lua_type(L, -2) == LUA_TSTRING && lua_type(L, -1) == LUA_TTABLE {
                let id = String(decoding: bytes(at: -2), as: UTF8.self)
                lua_getfield(L, -1, "path")
                let path = lua_type(L, -1) == LUA_TSTRING ? String(decoding: bytes(at: -1), as: UTF8.self) : nil
                clua_pop(L, 1)
                lua_getfield(L, -1, "text")
                let text = lua_type(L, -1) == LUA_TSTRING ? bytes(at: -1) : []
                clua_pop(L, 1)
                if let path { out[id] = LuaChunk(path: path, text: text) }
            }
            clua_pop(L, 1)
        }
        return out
    }

    // MARK: - Stack helpers

    private func push(_ bytes: [UInt8]) {
        bytes.withUnsafeBufferPointer { buf in
            buf.withMemoryRebound(to: CChar.self) { _ = lua_pushlstring(L, $0.baseAddress, $0.count) }
        }
    }

    private func bytes(at index: Int32) -> [UInt8] {
        var len = 0
        guard let p = lua_tolstring(L, index, &len) else { return [] }
        return Array(UnsafeRawBufferPointer(start: p, count: len))
    }

    private func popString() -> String? {
        defer { clua_pop(L, 1) }
        guard lua_type(L, -1) == LUA_TSTRING else { return nil }
        return String(decoding: bytes(at: -1), as: UTF8.self)
    }

    /// Reads a snapshot made by the prelude's `snap` (plain values, or tagged tables).
    private func read(_ index: Int32, depth: Int = 0) -> LuaValue {
        switch lua_type(L, index) {
        case LUA_TSTRING: return .string(bytes(at: index))
        case LUA_TBOOLEAN: return .boolean(lua_toboolean(L, index) != 0)
        case LUA_TNUMBER:
            if lua_isinteger(L, index) != 0 { return .integer(lua_tointegerx(L, index, nil)) }
            return .number(lua_tonumberx(L, index, nil))
        case LUA_TTABLE:
            break
        default:
            return .other("a \(String(cString: lua_typename(L, lua_type(L, index))))")
        }
        if depth > 60 { return .other("a table nested too deeply") }
        lua_getfield(L, index, "tag")
        let tag = popString()
        switch tag {
        case "preset":
            lua_getfield(L, index, "name")
            return .preset(popString() ?? "?")
        case "function": return .function
        case "other":
            lua_getfield(L, index, "what")
            return .other(popString() ?? "an unsupported value")
        case "table":
            var table = LuaTable()
            var numbered: [Int64: LuaValue] = [:]
            lua_getfield(L, index, "entries")
            let entries = lua_gettop(L)
            let n = lua_rawlen(L, entries)
            if n > 0 {
                for i in 1...Int64(n) {
                    lua_rawgeti(L, entries, i)
                    let pair = lua_gettop(L)
                    lua_rawgeti(L, pair, 1)
                    lua_rawgeti(L, pair, 2)
                    let value = read(lua_gettop(L), depth: depth + 1)
                    let keyIndex = lua_gettop(L) - 1
                    switch lua_type(L, keyIndex) {
                    case LUA_TSTRING:
                        table.fields[String(decoding: bytes(at: keyIndex), as: UTF8.self)] = value
                    case LUA_TNUMBER where lua_isinteger(L, keyIndex) != 0:
                        numbered[lua_tointegerx(L, keyIndex, nil)] = value
                    default:
                        table.oddKeys.append(read(keyIndex, depth: depth + 1).kindDescription)
                    }
                    clua_pop(L, 3)
                }
            }
            clua_pop(L, 1)
            var i: Int64 = 1
            while let v = numbered.removeValue(forKey: i) { table.array.append(v); i += 1 }
            for k in numbered.keys.sorted() { table.oddKeys.append("[\(k)]") }
            return .table(table)
        default:
            return .other("an unsupported value")
        }
    }

    // MARK: - The sandbox, in Lua

    /// Runs with the full standard library and returns the API table { run, collect, chunks }.
    /// The config's environment only ever sees `env`.
    static let prelude = #"""
local configDir, realpath = ...
local io_open, stderr = io.open, io.stderr
local getinfo = debug.getinfo
local type, next, rawequal, rawget, tostring, error, select, load, setmetatable, pcall =
      type, next, rawequal, rawget, tostring, error, select, load, setmetatable, pcall
local concat, sformat = table.concat, string.format

local records, chunks, presets = {}, {}, {}
local mainId = "fansync-config"
local moduleCount = 0
local env = {}

local function copy(lib, skip)
  local t = {}
  for k, v in next, lib do if not (skip and skip[k]) then t[k] = v end end
  return t
end
env.string = copy(string, { dump = true })
env.table = copy(table)
env.math = copy(math)
env.utf8 = copy(utf8)
env.os = { getenv = os.getenv, time = os.time, date = os.date, clock = os.clock }
for _, name in ipairs { "assert", "error", "ipairs", "next", "pairs", "pcall", "xpcall", "select",
                        "tonumber", "tostring", "type", "rawequal", "rawget", "rawset", "rawlen",
                        "setmetatable", "getmetatable" } do
  env[name] = _G[name]
end
env.unpack = table.unpack
env._VERSION = _VERSION
env._G = env
env.print = function(...)
  local parts = {}
  for i = 1, select("#", ...) do parts[i] = tostring((select(i, ...))) end
  stderr:write(concat(parts, "\t"), "\n")
end
env.load = function(chunk, name, mode, e)
  if mode ~= nil and mode ~= "t" then
    return nil, "a fansync config can load only text chunks (mode \"t\"), not precompiled bytecode"
  end
  if e == nil then e = env end
  return load(chunk, name, "t", e)
end

-- The presets. They are markers: what they mean is decided when the config is read.
local function preset(name)
  local p = setmetatable({}, {
    __newindex = function(_, k)
      error(sformat("default.%s is read-only in fansync: set %s in sync{} instead", name, tostring(k)), 2)
    end,
    __metatable = false,
  })
  presets[p] = name
  return p
end
local default = {
  rsync = preset("rsync"), rsyncssh = preset("rsyncssh"), rssh = preset("rssh"), direct = preset("direct"),
}
env.default = setmetatable(default, {
  __index = function(_, k)
    error(sformat("default.%s does not exist: fansync has default.rsync (local or host:dir target) and default.rsyncssh (alias default.rssh: host and targetdir)", tostring(k)), 2)
  end,
  __newindex = function(_, k)
    error(sformat("default.%s cannot be defined: fansync has no custom actions; use default.rsync or default.rsyncssh", tostring(k)), 2)
  end,
  __metatable = false,
})

-- A copy made at call time (a config may reuse and change a table after sync{}).
local function snap(v, depth, seen)
  local t = type(v)
  if t == "string" or t == "number" or t == "boolean" then return v end
  if t == "function" then return { tag = "function" } end
  if t ~= "table" then return { tag = "other", what = "a " .. t } end
  local p = presets[v]
  if p then return { tag = "preset", name = p } end
  if rawequal(v, default) then return { tag = "other", what = "the table 'default' itself" } end
  if seen[v] then return { tag = "other", what = "a table that contains itself" } end
  if depth > 50 then return { tag = "other", what = "a table nested too deeply" } end
  seen[v] = true
  local entries = {}
  for k, val in next, v do entries[#entries + 1] = { snap(k, depth + 1, seen), snap(val, depth + 1, seen) } end
  seen[v] = nil
  return { tag = "table", entries = entries }
end

local function caller()
  -- 1 caller, 2 record, 3 sync or settings, 4 the config's code
  local info = getinfo(4, "Sl")
  if not info then return nil, nil end
  local src = info.source
  if type(src) == "string" and src:sub(1, 1) == "=" then src = src:sub(2) else src = nil end
  if src == nil or chunks[src] == nil then return nil, nil end
  return src, info.currentline
end

local function record(kind, t)
  local chunk, line = caller()
  records[#records + 1] = { kind = kind, chunk = chunk, line = line, value = snap(t, 0, {}) }
end

env.sync = function(t)
  if type(t) ~= "table" then
    error(sformat("sync takes a table: sync { default.rsync, source = \"/dir\", target = \"host:/dir\" } (got a %s)", type(t)), 2)
  end
  record("sync", t)
end

local settingsObject = setmetatable({}, {
  __call = function(_, t)
    if type(t) ~= "table" then
      error(sformat("settings takes a table: settings { logfile = \"/var/log/fansync.log\" } (got a %s)", type(t)), 2)
    end
    record("settings", t)
  end,
})
env.settings = settingsObject

local loaded, loading = {}, {}
env.require = function(name)
  if type(name) ~= "string" then error("require takes a module name (a string)", 2) end
  if loaded[name] ~= nil then return loaded[name] end
  if name == "" or name:find("[^%w_%-%.]") or name:find("..", 1, true) or name:sub(1, 1) == "." or name:sub(-1) == "." then
    error(sformat("require %q: a module name is letters, digits, '_' and '-', parts separated by dots; fansync loads modules only from the config's directory", name), 2)
  end
  local path = configDir .. "/" .. name:gsub("%.", "/") .. ".lua"
  local real = realpath(path)
  if not real then
    error(sformat("require %q: no file %s (a fansync config can require only modules in its own directory, %s)", name, path, configDir), 2)
  end
  local realDir = realpath(configDir) or configDir
  if realDir ~= "/" then realDir = realDir .. "/" end
  if real:sub(1, #realDir) ~= realDir then
    error(sformat("require %q: %s leads to %s, outside the config's directory %s: refused", name, path, real, configDir), 2)
  end
  if loading[name] then error(sformat("require %q: modules require each other in a loop", name), 2) end
  local f = io_open(real, "rb")
  local text = f and f:read("a")
  if f then f:close() end
  if type(text) ~= "string" then error(sformat("require %q: cannot read %s", name, real), 2) end
  moduleCount = moduleCount + 1
  local id = "fansync-module#" .. moduleCount
  chunks[id] = { path = real, text = text }
  local chunk, err = load(text, "=" .. id, "t", env)
  if not chunk then error(err, 0) end
  loading[name] = true
  local result = chunk(name, real)
  loading[name] = nil
  if result == nil then result = true end
  loaded[name] = result
  return result
end

local api = {}
api.chunks = chunks
function api.run(text, path)
  chunks[mainId] = { path = path, text = text }
  local chunk, err = load(text, "=" .. mainId, "t", env)
  if not chunk then error(err, 0) end
  chunk()
end
function api.collect()
  local s = rawget(env, "settings")
  if rawequal(s, settingsObject) then
    if next(settingsObject) ~= nil then
      records[#records + 1] = { kind = "settingsFields", value = snap(settingsObject, 0, {}) }
    end
  elseif s ~= nil then
    records[#records + 1] = { kind = "settingsAssigned", value = snap(s, 0, {}) }
  end
  return records
end
return api
"""#
}

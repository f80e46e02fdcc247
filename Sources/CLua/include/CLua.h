#ifndef CLUA_H
#define CLUA_H
#include <stddef.h>
#include <lua5.4/lua.h>
#include <lua5.4/lauxlib.h>
#include <lua5.4/lualib.h>

// Shims for Lua's function-like macros and for the config sandbox (see shim.c).

/// A Lua state whose allocator refuses to grow past `memory_limit` bytes. Close with clua_close.
lua_State *clua_newstate(size_t memory_limit);
void clua_close(lua_State *L);
/// Changes the allocation limit of a state made by clua_newstate.
void clua_set_memory_limit(lua_State *L, size_t memory_limit);

/// After `count` VM instructions, every further instruction raises an error (so a config with an
/// endless loop fails instead of hanging, even when it wraps the loop in pcall). 0 removes the hook.
void clua_set_instruction_limit(lua_State *L, int count);

int clua_pcall(lua_State *L, int nargs, int nresults, int msgh);
void clua_pop(lua_State *L, int n);
int clua_registryindex(void);

/// Pushes a C function `realpath(path) -> string | nil, message` for the sandbox's `require`.
void clua_push_realpath(lua_State *L);

#endif

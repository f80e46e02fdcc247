#include "CLua.h"
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    size_t used;
    size_t limit;
} clua_alloc_state;

static void *clua_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    clua_alloc_state *s = (clua_alloc_state *)ud;
    if (ptr == NULL) osize = 0;
    if (nsize == 0) {
        free(ptr);
        s->used -= osize;
        return NULL;
    }
    if (nsize > osize && s->used + (nsize - osize) > s->limit) return NULL;
    void *p = realloc(ptr, nsize);
    if (p != NULL) s->used = s->used - osize + nsize;
    return p;
}

lua_State *clua_newstate(size_t memory_limit) {
    clua_alloc_state *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->limit = memory_limit;
    lua_State *L = lua_newstate(clua_alloc, s);
    if (L == NULL) free(s);
    return L;
}

void clua_close(lua_State *L) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    lua_close(L);
    free(ud);
}

void clua_set_memory_limit(lua_State *L, size_t memory_limit) {
    void *ud = NULL;
    lua_getallocf(L, &ud);
    ((clua_alloc_state *)ud)->limit = memory_limit;
}

static void clua_count_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    // From now on fail at every instruction: a pcall in the config cannot swallow this.
    lua_sethook(L, clua_count_hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "the config runs for too long (an endless loop?): stopped");
}

void clua_set_instruction_limit(lua_State *L, int count) {
    if (count <= 0) lua_sethook(L, NULL, 0, 0);
    else lua_sethook(L, clua_count_hook, LUA_MASKCOUNT, count);
}

int clua_pcall(lua_State *L, int nargs, int nresults, int msgh) {
    return lua_pcall(L, nargs, nresults, msgh);
}

void clua_pop(lua_State *L, int n) { lua_pop(L, n); }

int clua_registryindex(void) { return LUA_REGISTRYINDEX; }

static int clua_realpath_fn(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    char *resolved = realpath(path, NULL);
    if (resolved == NULL) {
        lua_pushnil(L);
        lua_pushstring(L, strerror(errno));
        return 2;
    }
    lua_pushstring(L, resolved);
    free(resolved);
    return 1;
}

void clua_push_realpath(lua_State *L) { lua_pushcfunction(L, clua_realpath_fn); }

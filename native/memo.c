/*
 * pg_mmretrieval statement memo (mmr._memo_get, mmr._memo_put): text the SQL planners built,
 * kept for the session.  Not part of the executor (pg_mmretrieval.c), in the same library (its
 * ABI number covers these functions too); sql/idempotent/089-native.sql binds them.
 */
#include "postgres.h"

#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

PG_FUNCTION_INFO_V1(mmr_memo_get);
PG_FUNCTION_INFO_V1(mmr_memo_put);

/*
 * The statement memo: text a SQL planner built (a statement's text), by a key the planner
 * writes, for the session.  mmr._memo_get(key) returns what mmr._memo_put(key, value) stored
 * for the same current user (NULL: nothing); the planner puts only what its builder returned.
 * An entry is visible to the user who put it only, so a role can at most change what its own
 * searches run (it could run that SQL itself): a SECURITY DEFINER function calling a search
 * runs as its owner and never sees another role's entries.  Every relation cache or pg_proc
 * invalidation (DDL, ANALYZE, VACUUM, an upgrade re-creating functions, a cache reset) forgets
 * all entries, and a put is dropped when one came between the key's miss and the put (the value
 * may have been built from the catalog as it was before).  At most MAX_MEMO entries, the oldest
 * replaced first.  The PL/pgSQL binding memoizes nothing (get: NULL, put: the value).
 */
#define MAX_MEMO 64

typedef struct MemoEntry
{
	Oid			user;
	uint32		hash;
	char	   *key;
	char	   *value;
} MemoEntry;

static MemoEntry memo[MAX_MEMO];
static int	n_memo = 0;
static int	memo_next = 0;		/* the slot replaced next once all are used */
static uint64 memo_generation = 0;	/* bumped by every invalidation */
static uint64 miss_generation = 0;	/* memo_generation at the last miss ... */
static uint32 miss_hash = 0;	/* ... of the key of this hash */
static bool memo_callbacks = false;

static void
memo_reset(void)
{
	for (int i = 0; i < n_memo; i++)
	{
		pfree(memo[i].key);
		pfree(memo[i].value);
	}
	n_memo = 0;
	memo_next = 0;
	memo_generation++;
}

static void
memo_reset_relcache(Datum arg, Oid relid)
{
	memo_reset();
}

static void
memo_reset_syscache(Datum arg, int cacheid, uint32 hashvalue)
{
	memo_reset();
}

/* Watch invalidations from a session's first memo call on. */
static void
memo_watch(void)
{
	if (memo_callbacks)
		return;
	CacheRegisterRelcacheCallback(memo_reset_relcache, (Datum) 0);
	CacheRegisterSyscacheCallback(PROCOID, memo_reset_syscache, (Datum) 0);
	memo_callbacks = true;
}

/* The loops over the memo are bounded by MAX_MEMO (64) entries; memo_find compares a key of
 * the caller's length with each, so it is cancellable once per entry (memo_reset, an
 * invalidation callback, frees at most 64 entries and must not be interrupted). */
static int
memo_find(Oid user, uint32 hash, const char *key)
{
	for (int i = 0; i < n_memo; i++)
	{
		CHECK_FOR_INTERRUPTS();
		if (memo[i].hash == hash && memo[i].user == user && strcmp(memo[i].key, key) == 0)
			return i;
	}
	return -1;
}

Datum
mmr_memo_get(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	uint32		hash = hash_bytes((const unsigned char *) key, strlen(key));
	int			i;

	memo_watch();
	i = memo_find(GetUserId(), hash, key);
	if (i < 0)
	{
		miss_hash = hash;
		miss_generation = memo_generation;
		PG_RETURN_NULL();
	}
	PG_RETURN_TEXT_P(cstring_to_text(memo[i].value));
}

Datum
mmr_memo_put(PG_FUNCTION_ARGS)
{
	char	   *key = text_to_cstring(PG_GETARG_TEXT_PP(0));
	uint32		hash = hash_bytes((const unsigned char *) key, strlen(key));
	Oid			user = GetUserId();
	int			i;

	/* kept only after this key's miss (mmr._memo_get, which watches invalidations) and when
	 * no invalidation came since */
	if (memo_callbacks && hash == miss_hash && miss_generation == memo_generation
		&& memo_find(user, hash, key) < 0)
	{
		if (n_memo < MAX_MEMO)
			i = n_memo++;
		else
		{
			i = memo_next;
			memo_next = (memo_next + 1) % MAX_MEMO;
			pfree(memo[i].key);
			pfree(memo[i].value);
		}
		memo[i].user = user;
		memo[i].hash = hash;
		memo[i].key = MemoryContextStrdup(TopMemoryContext, key);
		memo[i].value = MemoryContextStrdup(TopMemoryContext, text_to_cstring(PG_GETARG_TEXT_PP(1)));
	}
	PG_RETURN_DATUM(PG_GETARG_DATUM(1));
}

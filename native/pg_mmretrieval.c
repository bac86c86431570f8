/*
 * pg_mmretrieval native module: the single-vector fast path of mmr.search without a PL/pgSQL
 * layer.
 *
 * Why: measured on a 100k x 512 HNSW index (bench/search_overhead.py), PL/pgSQL dispatch on
 * collection and space names costs 10-15 % of a bare `ORDER BY embedding <=> q LIMIT k`,
 * because `RETURN QUERY EXECUTE` plans the statement on every call and the function runs
 * through the PL/pgSQL executor.  This module keeps one generic plan per cached statement
 * (SPI_keepplan) for the session and runs it directly.
 *
 * What: mmr.search(collection, space, query, k, filter, ef_search, max_scan_tuples, rerank,
 * rerank_depth, rerank_params) with the same contract as the PL/pgSQL function
 * mmr._search_plpgsql (sql/idempotent/045-search.sql), which stays the reference: every call
 * its planner gives no plan (a filter, a reranker, max_scan_tuples, k or ef_search out of
 * range, an unknown space, a wrong dimension, a zero vector, any NULL) is handed unchanged to
 * the general path mmr._search_general, which the reference calls too, so errors and
 * general-path behaviour are one implementation.  The fast path itself mirrors the PL/pgSQL one:
 *   1. the space's cached `search` statement (mmr._active_space);
 *   2. hnsw.ef_search raised to k (or to ef_search) for the call;
 *   3. the statement with hnsw.iterative_scan off (the function's SET clause);
 *   4. when the scan returns fewer than k rows (invisible index entries, a tiny table): the
 *      rest with strict-order iterative scans, past the rows already returned.
 * The function's SET clauses (search_path, hnsw.*) scope every setting to the call, exactly as
 * for the PL/pgSQL function.
 *
 * sql/idempotent/089-native.sql binds mmr.search to this module when the library loads and
 * its ABI matches MMR_NATIVE_ABI; otherwise mmr.search is the PL/pgSQL function itself.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "executor/spi_priv.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "utils/jsonb.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/datum.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

PG_MODULE_MAGIC;

/* Bumped whenever the SQL side this file calls changes (the planners mmr._search_exec_plan and
 * mmr._composed_exec_plan, the plan type mmr._exec_plan's field names, the reference functions'
 * signatures, mmr._fast_plan for the by-key overload); 089-native.sql checks it.  2: the
 * executor runs SQL-planned statements (issue 14, item 1).  3: a call without a plan goes to the
 * general-path functions (mmr._search_general, mmr._composed_search_general).  4: plans carry
 * `iterative` (hnsw.iterative_scan for the call) and `planning` (kept in the HNSW shape, or
 * planned per call): the filtered fast path of mmr.search (revision 0008). */
#define MMR_NATIVE_ABI 4

#define SEARCH_NARGS 10
#define MAX_K 1000
#define DEFAULT_EF 40
#define DEFAULT_MAX_SCAN_TUPLES 20000
#define MAX_CACHED 256
#define MAX_ARGS 13

/* pgvector's on-disk vector: varlena header, dim, unused, dim floats. */
typedef struct PgVector
{
	int32		vl_len_;
	int16		dim;
	int16		unused;
	float		x[FLEXIBLE_ARRAY_MEMBER];
} PgVector;

typedef struct CachedStatement
{
	char	   *sql;
	int			nargs;
	Oid			types[MAX_ARGS];
	bool		hnsw_shaped;	/* built in the HNSW shape (a plan's planning 'generic') */
	SPIPlanPtr	plan;
} CachedStatement;

static CachedStatement cached[MAX_CACHED];
static int	n_cached = 0;

PG_FUNCTION_INFO_V1(mmr_native_abi);
PG_FUNCTION_INFO_V1(mmr_search);
PG_FUNCTION_INFO_V1(mmr_composed_search);
PG_FUNCTION_INFO_V1(mmr_composed_search_key);

Datum
mmr_native_abi(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(MMR_NATIVE_ABI);
}

/* Prepare and keep a statement for the session; generic plans only (no per-call planning). */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types, CURSOR_OPT_GENERIC_PLAN);

	if (plan == NULL)
		elog(ERROR, "pg_mmretrieval native: cannot prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "pg_mmretrieval native: SPI_keepplan failed");
	return plan;
}

/* The planner settings of the HNSW shape (mmr._exec_hnsw_shaped, 045-search.sql, has the same
 * list): every other way to produce rows in distance order switched off. */
static const char *const hnsw_shape_off[] = {"enable_seqscan", "enable_bitmapscan", "enable_sort",
"enable_incremental_sort", "enable_hashjoin", "enable_mergejoin"};

/*
 * Build (or rebuild) a kept statement's generic plan now, under the index settings every search
 * function starts with (its SET clauses: hnsw.ef_search 40, no iterative scan), not under the
 * settings one call raised them to: pgvector's cost estimate grows with hnsw.ef_search, and a
 * generic plan (LIMIT $2 estimated at 10 % of the rows) built while one call had ef_search 200
 * was a Seq Scan + Sort, kept for the whole session.  Called before every use of a plan that
 * is not valid (new, or invalidated by DDL or ANALYZE), so no call's settings reach a plan.
 * `hnsw_shaped` (a plan's planning 'generic': a filter's index plan): also in the HNSW shape,
 * so that the plan kept is the index's ordered scan joined to the source row by row, never a
 * sort of the rows a btree finds (a generic plan estimates the filter without its values).
 */
static void
build_plan(SPIPlanPtr plan, bool hnsw_shaped)
{
	int			nest = NewGUCNestLevel();
	CachedPlan *cplan;

	(void) set_config_option("hnsw.ef_search", "40", PGC_USERSET, PGC_S_SESSION, GUC_ACTION_SAVE,
							 true, 0, false);
	(void) set_config_option("hnsw.iterative_scan", "off", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	if (hnsw_shaped)
		for (int i = 0; i < (int) lengthof(hnsw_shape_off); i++)
			(void) set_config_option(hnsw_shape_off[i], "off", PGC_USERSET, PGC_S_SESSION,
									 GUC_ACTION_SAVE, true, 0, false);
	cplan = SPI_plan_get_cached_plan(plan);
	if (cplan != NULL)
		ReleaseCachedPlan(cplan, CurrentResourceOwner);
	AtEOXact_GUC(true, nest);
}

/* A kept statement whose generic plan is built and still valid. */
static bool
plan_ready(SPIPlanPtr plan)
{
	CachedPlanSource *ps;

	if (list_length(plan->plancache_list) != 1)
		return SPI_plan_is_valid(plan);
	ps = (CachedPlanSource *) linitial(plan->plancache_list);
	return ps->is_valid && ps->gplan != NULL && ps->gplan->is_valid;
}

/* The session's kept plan of a cached statement (same text, argument types and shape), planned
 * under the default index settings, in the HNSW shape when asked (build_plan). */
static SPIPlanPtr
shaped_statement_plan(const char *sql, int nargs, const Oid *types, bool hnsw_shaped)
{
	int			i;

	Assert(nargs <= MAX_ARGS);
	for (i = 0; i < n_cached; i++)
		if (cached[i].nargs == nargs && cached[i].hnsw_shaped == hnsw_shaped
			&& strcmp(cached[i].sql, sql) == 0
			&& memcmp(cached[i].types, types, sizeof(Oid) * nargs) == 0)
		{
			if (!plan_ready(cached[i].plan))
				build_plan(cached[i].plan, hnsw_shaped);
			return cached[i].plan;
		}
	if (n_cached == MAX_CACHED)
	{
		/* Spaces come and go (switch_space): drop the oldest statement. */
		SPI_freeplan(cached[0].plan);
		pfree(cached[0].sql);
		memmove(&cached[0], &cached[1], sizeof(CachedStatement) * (MAX_CACHED - 1));
		n_cached--;
	}
	cached[n_cached].plan = keep_plan(sql, nargs, (Oid *) types);
	build_plan(cached[n_cached].plan, hnsw_shaped);
	cached[n_cached].sql = MemoryContextStrdup(TopMemoryContext, sql);
	cached[n_cached].nargs = nargs;
	cached[n_cached].hnsw_shaped = hnsw_shaped;
	memcpy(cached[n_cached].types, types, sizeof(Oid) * nargs);
	return cached[n_cached++].plan;
}

/* The session's kept plan of a cached statement, planned under the default index settings. */
static SPIPlanPtr
statement_plan(const char *sql, int nargs, const Oid *types)
{
	return shaped_statement_plan(sql, nargs, types, false);
}

/* Append SPI's result rows (key jsonb, score float8) to the function's tuplestore. */
static void
append_rows(ReturnSetInfo *rsinfo)
{
	uint64		i;

	for (i = 0; i < SPI_processed; i++)
	{
		Datum		values[2];
		bool		nulls[2];

		CHECK_FOR_INTERRUPTS();
		values[0] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &nulls[0]);
		values[1] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &nulls[1]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
}

/* Run a kept statement for its single row: true when it returned exactly one (SPI_tuptable). */
static bool
one_row(const char *sql, int nargs, const Oid *types, Datum *args, const char *nulls)
{
	if (SPI_execute_plan(statement_plan(sql, nargs, types), args, nulls, true, 2) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: \"%s\" failed", sql);
	return SPI_processed == 1;
}

static void
set_local(const char *name, const char *value)
{
	(void) set_config_option(name, value, PGC_USERSET, PGC_S_SESSION, GUC_ACTION_LOCAL, true,
							 0, false);
}

/* Iterative scans on for the rest of the call: mmr._top_up_scan, the one definition of the
 * top-up's settings (a rare path, so its cost does not matter). */
static void
top_up_scan(void)
{
	if (SPI_execute("SELECT mmr._top_up_scan()", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: mmr._top_up_scan failed");
}

/* hnsw.ef_search for the call: at least the rows one scan must return, or the caller's
 * ef_search (argument ef_arg) when given (mmr._raise_ef_search). */
static void
raise_ef_search(int32 rows, FunctionCallInfo fcinfo, int ef_arg)
{
	if (rows > DEFAULT_EF || !PG_ARGISNULL(ef_arg))
	{
		char		buf[16];
		int32		ef = PG_ARGISNULL(ef_arg) ? DEFAULT_EF : PG_GETARG_INT32(ef_arg);

		snprintf(buf, sizeof(buf), "%d", Max(rows, ef));
		set_local("hnsw.ef_search", buf);
	}
}

/* A space on the fast path (mmr._active_space, as a join: the SQL function is not inlined
 * and costs ~60 us per call as a function scan). */
typedef struct FastSpace
{
	int32		id;
	int32		dimensions;
	bool		cosine;
	bool		plain_vector;	/* storage 'vector' (not halfvec) */
	Jsonb	   *statements;		/* its cached statements (088-statement-cache.sql) */
	char	   *search_sql;		/* statements ->> 'search': $1 vector, $2 k */
} FastSpace;

/* One of a space's cached statements by name (NULL when it has none), read from the jsonb the
 * look-up fetched: no further query, and only the statements a path uses are copied out. */
static char *
space_sql(const FastSpace *space, const char *name)
{
	JsonbValue	v;

	if (getKeyJsonValueFromContainer(&space->statements->root, name, strlen(name), &v) == NULL
		|| v.type != jbvString)
		return NULL;
	return pnstrdup(v.val.string.val, v.val.string.len);
}

static bool
lookup_space(Datum collection, Datum space, FastSpace *out)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		args[2];
	HeapTuple	row;
	TupleDesc	desc;
	bool		null_id;
	bool		null_dims;
	char	   *distance;

	args[0] = collection;
	args[1] = space;
	if (!one_row("SELECT s.id, s.dimensions, s.distance, s.storage = 'vector', s.statements "
				 "FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
				 "WHERE c.name = $1 AND s.name = $2 AND s.active AND s.statements IS NOT NULL "
				 /* 'bit' spaces (candidates, then exact rerank) take the PL/pgSQL path */
				 "AND s.storage <> 'bit'",
				 2, types, args, NULL))
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	out->id = DatumGetInt32(SPI_getbinval(row, desc, 1, &null_id));
	if (null_id)
		return false;
	out->dimensions = DatumGetInt32(SPI_getbinval(row, desc, 2, &null_dims));
	if (null_dims)
		return false;
	distance = SPI_getvalue(row, desc, 3);
	out->plain_vector = DatumGetBool(SPI_getbinval(row, desc, 4, &null_dims)) && !null_dims;
	out->statements = DatumGetJsonbP(SPI_getbinval(row, desc, 5, &null_id));
	if (null_id || distance == NULL)
		return false;
	out->search_sql = space_sql(out, "search");
	if (out->search_sql == NULL)
		return false;
	out->cosine = strcmp(distance, "cosine") == 0;
	return true;
}

/* mmr._max_norm(): the largest norm of a query vector (no distance overflows float32). */
#define MAX_NORM 1e18

/* A query vector the fast path accepts (mmr._norm_ok): the space's dimension, a norm of at most
 * MAX_NORM, and not zero under cosine (anything else is the general path's to reject, with its
 * error). */
static PgVector *
check_vector(PgVector *v, const FastSpace *space)
{
	double		norm = 0.0;

	if (v == NULL || v->dim != space->dimensions)
		return NULL;
	for (int i = 0; i < v->dim; i++)
		norm += (double) v->x[i] * (double) v->x[i];
	if (!(sqrt(norm) <= MAX_NORM) || (space->cosine && !(norm > 0.0)))
		return NULL;
	return v;
}

/* A short scan's rest (invisible index entries or a tiny table): iterative scans on for the
 * rest of the call (mmr._top_up_scan), then `rest`, its rows appended. */
static void
run_rest(ReturnSetInfo *rsinfo, const char *rest, int nargs, Oid *types, Datum *args,
		 const char *nulls)
{
	top_up_scan();
	if (SPI_execute_with_args(rest, nargs, types, args, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: top-up scan failed");
	append_rows(rsinfo);
}

/* A single-vector statement continued past the `got` rows it returned (mmr._offset_sql). */
static char *
offset_sql(const char *sql, uint64 got)
{
	return psprintf("SELECT * FROM (%s) x OFFSET " UINT64_FORMAT, sql, got);
}

/* mmr._fast_path_allowed (045-search.sql): max_scan_tuples (argument mst_arg) unset or equal
 * to its default, and the fast paths not switched off for the session (mmr.fast_path). */
static bool
fast_path_allowed(FunctionCallInfo fcinfo, int mst_arg)
{
	const char *setting;

	if (!PG_ARGISNULL(mst_arg) && PG_GETARG_INT32(mst_arg) != DEFAULT_MAX_SCAN_TUPLES)
		return false;
	setting = GetConfigOption("mmr.fast_path", true, false);
	return setting == NULL || (strcmp(setting, "off") != 0 && strcmp(setting, "false") != 0
							   && strcmp(setting, "0") != 0);
}

/* The k and ef_search arguments allow the fast path. */
static bool
fast_bounds(FunctionCallInfo fcinfo, int k_arg, int32 max_k, int ef_arg)
{
	if (PG_ARGISNULL(k_arg) || PG_GETARG_INT32(k_arg) < 1 || PG_GETARG_INT32(k_arg) > max_k)
		return false;
	return PG_ARGISNULL(ef_arg)
		|| (PG_GETARG_INT32(ef_arg) >= 1 && PG_GETARG_INT32(ef_arg) <= MAX_K);
}

/* A plan (mmr._exec_plan, sql/incremental/007-00-search.sql) as a tuple with its descriptor. */
typedef struct ExecPlan
{
	HeapTupleData tuple;
	TupleDesc	desc;
	Oid			type;
} ExecPlan;

/* A field of a plan by name (its type in *type when asked). */
static Datum
plan_field(const ExecPlan *plan, const char *name, bool *isnull, Oid *type)
{
	for (int i = 0; i < plan->desc->natts; i++)
	{
		Form_pg_attribute att = TupleDescAttr(plan->desc, i);

		if (!att->attisdropped && strcmp(NameStr(att->attname), name) == 0)
		{
			if (type != NULL)
				*type = att->atttypid;
			return heap_getattr((HeapTuple) &plan->tuple, i + 1, plan->desc, isnull);
		}
	}
	elog(ERROR, "pg_mmretrieval native: a plan has no field \"%s\"", name);
	return (Datum) 0;			/* not reached */
}

/*
 * Run a plan: hnsw.ef_search and hnsw.iterative_scan set to its ef_search and iterative (when
 * given, for the rest of the call: the function's SET clauses restore them), its statement with
 * the plan fields its `args` name as $1, $2, ..., planned as its `planning` says (NULL: a kept
 * plan per statement text and argument types; 'generic': the same, built in the HNSW shape;
 * 'custom': planned for this call with its values), then, when the statement returned fewer
 * than k rows and the plan has a rest, mmr._exec_rest (a rare path).
 */
static void
run_plan(ReturnSetInfo *rsinfo, Datum plan_datum)
{
	HeapTupleHeader td = DatumGetHeapTupleHeader(plan_datum);
	ExecPlan	plan;
	Datum		value;
	bool		isnull;
	char	   *sql;
	Datum	   *names;
	bool	   *name_nulls;
	int			nargs;
	Oid			types[MAX_ARGS];
	Datum		args[MAX_ARGS];
	char		nulls[MAX_ARGS];
	uint64		got;
	int32		k;
	char	   *planning;
	int			ret;

	plan.tuple.t_len = HeapTupleHeaderGetDatumLength(td);
	ItemPointerSetInvalid(&plan.tuple.t_self);
	plan.tuple.t_tableOid = InvalidOid;
	plan.tuple.t_data = td;
	plan.type = HeapTupleHeaderGetTypeId(td);
	plan.desc = lookup_rowtype_tupdesc(plan.type, HeapTupleHeaderGetTypMod(td));

	sql = TextDatumGetCString(plan_field(&plan, "sql", &isnull, NULL));
	value = plan_field(&plan, "ef_search", &isnull, NULL);
	if (!isnull)
	{
		char		buf[16];

		snprintf(buf, sizeof(buf), "%d", DatumGetInt32(value));
		set_local("hnsw.ef_search", buf);
	}
	value = plan_field(&plan, "iterative", &isnull, NULL);
	if (!isnull)
		set_local("hnsw.iterative_scan", TextDatumGetCString(value));
	value = plan_field(&plan, "planning", &isnull, NULL);
	planning = isnull ? NULL : TextDatumGetCString(value);
	value = plan_field(&plan, "args", &isnull, NULL);
	if (isnull)
		elog(ERROR, "pg_mmretrieval native: a plan without args");
	deconstruct_array(DatumGetArrayTypeP(value), TEXTOID, -1, false, TYPALIGN_INT, &names,
					  &name_nulls, &nargs);
	if (nargs > MAX_ARGS)
		elog(ERROR, "pg_mmretrieval native: a plan with %d arguments", nargs);
	for (int i = 0; i < nargs; i++)
	{
		args[i] = plan_field(&plan, TextDatumGetCString(names[i]), &isnull, &types[i]);
		nulls[i] = isnull ? 'n' : ' ';
	}
	if (planning != NULL && strcmp(planning, "custom") == 0)
		ret = SPI_execute_with_args(sql, nargs, types, args, nulls, true, 0);
	else if (planning == NULL || strcmp(planning, "generic") == 0)
		ret = SPI_execute_plan(shaped_statement_plan(sql, nargs, types, planning != NULL), args,
							   nulls, true, 0);
	else
		elog(ERROR, "pg_mmretrieval native: a plan with planning \"%s\"", planning);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: a plan's statement failed");
	got = SPI_processed;
	append_rows(rsinfo);
	k = DatumGetInt32(plan_field(&plan, "k", &isnull, NULL));
	(void) plan_field(&plan, "rest", &isnull, NULL);
	if (got < (uint64) k && !isnull)
	{
		Oid			rest_types[2] = {plan.type, INT8OID};
		Datum		rest_args[2] = {plan_datum, Int64GetDatum((int64) got)};

		if (SPI_execute_plan(statement_plan("SELECT key, score FROM mmr._exec_rest($1, $2)", 2,
											rest_types), rest_args, NULL, true, 0)
			!= SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval native: mmr._exec_rest failed");
		append_rows(rsinfo);
	}
	ReleaseTupleDesc(plan.desc);
}

/* "SELECT p FROM fn($1, ..., $n) p" (or "SELECT key, score FROM ...") with the call's argument
 * types, and the call's arguments as values and nulls. */
static char *
call_sql(FunctionCallInfo fcinfo, const char *columns, const char *fn, const char *alias,
		 Oid *types, Datum *values, char *nulls)
{
	StringInfoData sql;

	Assert(PG_NARGS() <= MAX_ARGS);
	initStringInfo(&sql);
	appendStringInfo(&sql, "SELECT %s FROM %s(", columns, fn);
	for (int i = 0; i < PG_NARGS(); i++)
	{
		types[i] = get_fn_expr_argtype(fcinfo->flinfo, i);
		if (!OidIsValid(types[i]))
			elog(ERROR, "pg_mmretrieval native: argument types unknown");
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		appendStringInfo(&sql, "%s$%d", i == 0 ? "" : ", ", i + 1);
	}
	appendStringInfo(&sql, ") %s", alias);
	return sql.data;
}

/* The plan the SQL planner `planner` (called with the call's arguments) returns for the call,
 * copied out of SPI's result; false when it returns none (the call takes the general path). */
static bool
plan_of(FunctionCallInfo fcinfo, const char *planner, Datum *plan)
{
	Oid			types[MAX_ARGS];
	Datum		values[MAX_ARGS];
	char		nulls[MAX_ARGS];
	char	   *sql = call_sql(fcinfo, "p", planner, "p", types, values, nulls);
	bool		isnull;

	if (SPI_execute_plan(statement_plan(sql, PG_NARGS(), types), values, nulls, true, 2)
		!= SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: the planner %s failed", planner);
	if (SPI_processed != 1)
		return false;
	*plan = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	if (isnull)
		return false;
	*plan = PointerGetDatum(PG_DETOAST_DATUM_COPY(*plan));
	return true;
}

/* A fast path: true when it answered the call. */
typedef bool (*FastPath) (FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo);

/* The name of the call's SQL planner, looked up by SQL (NULL: none, the general path). */
typedef const char *(*PlannerOf) (FunctionCallInfo fcinfo);

/*
 * A search entry point: the plan its SQL planner `planner` (or the one `planner_of` names for
 * the call) returns for the call, run; else (no planner, or no plan) its fast path `fast` when it
 * has one; else the general-path function `general` (PL/pgSQL) with the call's arguments
 * unchanged (same argument types): the planner already said no, so the general path runs
 * without asking it again.
 */
static Datum
search_entry(FunctionCallInfo fcinfo, const char *planner, PlannerOf planner_of, FastPath fast,
			 const char *general)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum		plan;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_mmretrieval native: SPI_connect failed");
	if (planner_of != NULL)
		planner = planner_of(fcinfo);
	if (planner != NULL && plan_of(fcinfo, planner, &plan))
		run_plan(rsinfo, plan);
	else if (fast == NULL || !fast(fcinfo, rsinfo))
	{
		Oid			types[MAX_ARGS];
		Datum		values[MAX_ARGS];
		char		nulls[MAX_ARGS];
		char	   *sql = call_sql(fcinfo, "key, score", general, "", types, values, nulls);

		if (SPI_execute_plan(statement_plan(sql, PG_NARGS(), types), values, nulls, true, 0)
			!= SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval native: the general path failed");
		append_rows(rsinfo);
	}
	SPI_finish();
	return (Datum) 0;
}

Datum
mmr_search(PG_FUNCTION_ARGS)
{
	return search_entry(fcinfo, "mmr._search_exec_plan", NULL, NULL, "mmr._search_general");
}

/*
 * mmr.composed_search with the reference as a vector.  Arguments: collection, space,
 * reference, modifier, method, k, params, filter, ef_search, max_scan_tuples, rerank,
 * rerank_depth, rerank_params.  The fast path is the PL/pgSQL one's: mmr._fast_plan decides
 * (single-vector methods and the two-leg score_sum / product with valid arguments) and builds
 * the query vectors; its statement runs from a kept plan, and mmr._fast_rerun's rule tops a
 * short scan up.  Everything else goes to mmr._composed_search_plpgsql.
 */
static bool
is_method(FunctionCallInfo fcinfo, const char *name)
{
	/* lower(coalesce(method, 'weighted')) = name, for ASCII names; a method spelled with other
	 * characters goes to mmr._fast_plan, which decides with SQL's lower(). */
	const char *m = PG_ARGISNULL(4) ? "weighted" : text_to_cstring(PG_GETARG_TEXT_PP(4));

	return pg_strcasecmp(m, name) == 0;
}

/* params is an object whose keys are among names (and, with `numbers`, whose values are all
 * numbers). */
static bool
params_within(Jsonb *params, const char *const *names, int n_names, bool numbers)
{
	JsonbIterator *it;
	JsonbValue	v;
	JsonbIteratorToken tok;

	if (!JB_ROOT_IS_OBJECT(params))
		return false;
	it = JsonbIteratorInit(&params->root);
	while ((tok = JsonbIteratorNext(&it, &v, true)) != WJB_DONE)
	{
		CHECK_FOR_INTERRUPTS();
		if (tok == WJB_KEY)
		{
			bool		known = false;

			for (int i = 0; i < n_names; i++)
				known = known || (v.val.string.len == (int) strlen(names[i])
								  && strncmp(v.val.string.val, names[i],
											 v.val.string.len) == 0);
			if (!known)
				return false;
		}
		else if (tok == WJB_VALUE && numbers && v.type != jbvNumeric)
			return false;
	}
	return true;
}

/* mmr._num(params, name, default): a number of params (checked by numeric_params). */
static double
num_param(FunctionCallInfo fcinfo, const char *name, double dflt)
{
	JsonbValue	value;

	if (PG_ARGISNULL(6)
		|| getKeyJsonValueFromContainer(&PG_GETARG_JSONB_P(6)->root, name, strlen(name),
										&value) == NULL)
		return dflt;
	return DatumGetFloat8(DirectFunctionCall1(numeric_float8,
											  NumericGetDatum(value.val.numeric)));
}

static Datum value_of(const char *sql, int nargs, const Oid *types, Datum *args,
					  const char *nulls, bool *isnull);

/* The candidates per leg (mmr._candidates: params.candidates checked against its bound, at
 * least `floor`, `dflt` when absent), so that the bound is enforced in one place. */
static int32
candidates(FunctionCallInfo fcinfo, int32 floor, int32 dflt)
{
	Oid			types[3] = {JSONBOID, INT4OID, INT4OID};
	Datum		args[3] = {PG_ARGISNULL(6) ? (Datum) 0 : PG_GETARG_DATUM(6),
	Int32GetDatum(floor), Int32GetDatum(dflt)};
	char		nulls[3] = {PG_ARGISNULL(6) ? 'n' : ' ', ' ', ' '};
	bool		isnull;
	Datum		n = value_of("SELECT mmr._candidates($1, $2, $3)", 3, types, args, nulls, &isnull);

	if (isnull)
		elog(ERROR, "pg_mmretrieval native: mmr._candidates returned NULL");
	return DatumGetInt32(n);
}

/* Column `col` of SPI's first result row, copied out of the tuple table (NULL: *isnull). */
static Datum
copy_value(int col, bool *isnull)
{
	Form_pg_attribute att = TupleDescAttr(SPI_tuptable->tupdesc, col - 1);
	Datum		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, col, isnull);

	return *isnull ? (Datum) 0 : datumCopy(value, att->attbyval, att->attlen);
}

/* The value of a kept one-column statement, NULL when it returns no row (EXECUTE ... INTO). */
static Datum
value_of(const char *sql, int nargs, const Oid *types, Datum *args, const char *nulls,
		 bool *isnull)
{
	if (!one_row(sql, nargs, types, args, nulls))
	{
		*isnull = true;			/* no row */
		return (Datum) 0;
	}
	return copy_value(1, isnull);
}

/*
 * The fast path as mmr._fast_plan plans it (the PL/pgSQL fast path's rule, shared): the
 * reference `ref` (the vector argument, or a stored row's embedding), the modifier (argument 3),
 * method (4), params (6, less exclude_reference), k (5), and the key to leave out (`exclude`,
 * when has_exclude); then mmr._fast_rerun's top-up.  False when mmr._fast_plan declines.
 */
static bool
run_fast_plan(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo, int32 space_id, Datum ref,
			  Datum exclude, bool by_key)
{
	Oid			vector_type = get_fn_expr_argtype(fcinfo->flinfo, 3);
	Oid			plan_types[8] = {INT4OID, vector_type, vector_type, TEXTOID, JSONBOID, INT4OID,
	JSONBOID, BOOLOID};
	Datum		plan_args[8];
	char		plan_nulls[8];
	Oid			types[5] = {get_array_type(vector_type), INT4OID, JSONBOID, INT4OID, JSONBOID};
	Datum		args[5];
	bool		has_exclude = by_key && exclude != (Datum) 0;
	char		nulls[5] = {' ', ' ', 'n', ' ', has_exclude ? ' ' : 'n'};
	int32		k = PG_GETARG_INT32(5);
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *sql;
	char	   *pair_sql;
	int32		n;
	int			n_vecs;
	uint64		got;

	plan_args[0] = Int32GetDatum(space_id);
	plan_args[1] = ref;
	plan_args[6] = exclude;
	plan_nulls[0] = plan_nulls[1] = ' ';
	plan_nulls[6] = has_exclude ? ' ' : 'n';
	plan_args[7] = BoolGetDatum(by_key);
	plan_nulls[7] = ' ';
	for (int i = 2; i < 6; i++)
	{
		int			arg = i == 2 ? 3 : i == 3 ? 4 : i == 4 ? 6 : 5;

		plan_args[i] = PG_ARGISNULL(arg) ? (Datum) 0 : PG_GETARG_DATUM(arg);
		plan_nulls[i] = PG_ARGISNULL(arg) ? 'n' : ' ';
	}
	/* By key ($8), exclude_reference is the overload's own parameter, not the method's. */
	if (!one_row("SELECT p.sql, p.vecs, p.n, cardinality(p.vecs), p.aux ->> 'sql' "
				 "FROM mmr._space s, mmr._fast_plan(s, $2, $3, $4, "
				 "CASE WHEN $8 THEN $5 - 'exclude_reference' ELSE $5 END, $6, $7) p "
				 "WHERE s.id = $1 AND p.sql IS NOT NULL", 8, plan_types, plan_args, plan_nulls))
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	sql = SPI_getvalue(row, desc, 1);
	args[0] = SPI_getbinval(row, desc, 2, &isnull);
	n = DatumGetInt32(SPI_getbinval(row, desc, 3, &isnull));
	n_vecs = DatumGetInt32(SPI_getbinval(row, desc, 4, &isnull));
	pair_sql = SPI_getvalue(row, desc, 5);
	args[1] = Int32GetDatum(n);
	args[2] = (Datum) 0;
	args[3] = Int32GetDatum(k);
	args[4] = exclude;

	raise_ef_search(n, fcinfo, 8);
	if (SPI_execute_plan(statement_plan(sql, 5, types), args, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: composed statement failed");
	got = SPI_processed;
	append_rows(rsinfo);
	/* mmr._fast_rerun: a short single-vector scan continues past its rows; a checked pair
	 * statement that returned nothing (a leg came back short) reruns in its plain form. */
	if (got < (uint64) k && (n_vecs == 1 || got == 0))
	{
		if (n_vecs > 1 && pair_sql == NULL)
			elog(ERROR, "pg_mmretrieval native: no plain statement to rerun");
		run_rest(rsinfo, n_vecs == 1 ? offset_sql(sql, got) : pair_sql, 5, types, args, nulls);
	}
	return true;
}

/* The planner names mmr._composed_fast_planner gave, by the method argument as passed (NULL
 * too), for the session: its answer depends on the method alone, so one query per method; any
 * change to pg_proc (an upgrade re-creating the functions) forgets them (planner_names_reset). */
#define MAX_PLANNER_NAMES 32

typedef struct PlannerName
{
	char	   *method;			/* NULL: the method argument was NULL */
	char	   *planner;		/* "mmr.<builder>", or NULL: no fast path for the method */
} PlannerName;

static PlannerName planner_names[MAX_PLANNER_NAMES];
static int	n_planner_names = 0;
static bool planner_names_callback = false;

static void
planner_names_reset(Datum arg, int cacheid, uint32 hashvalue)
{
	for (int i = 0; i < n_planner_names; i++)
	{
		if (planner_names[i].method != NULL)
			pfree(planner_names[i].method);
		if (planner_names[i].planner != NULL)
			pfree(planner_names[i].planner);
	}
	n_planner_names = 0;
}

/*
 * The planner of the call's method (argument 4): mmr._composed_fast_planner names it (the
 * method table's builder, e.g. mmr._fast_plan_weighted), so that the kept plan of each method
 * is its own small statement; NULL when no fast path serves the method.  Asked once per method
 * and session (planner_names).
 */
static const char *
composed_planner(FunctionCallInfo fcinfo)
{
	Oid			types[1] = {TEXTOID};
	Datum		args[1] = {PG_ARGISNULL(4) ? (Datum) 0 : PG_GETARG_DATUM(4)};
	char		nulls[1] = {PG_ARGISNULL(4) ? 'n' : ' '};
	char	   *method = PG_ARGISNULL(4) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(4));
	char	   *name;
	char	   *planner;

	for (int i = 0; i < n_planner_names; i++)
		if (method == NULL ? planner_names[i].method == NULL
			: planner_names[i].method != NULL && strcmp(planner_names[i].method, method) == 0)
			return planner_names[i].planner;
	if (!one_row("SELECT mmr._composed_fast_planner($1)", 1, types, args, nulls))
		return NULL;
	name = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	planner = name == NULL ? NULL : psprintf("mmr.%s", quote_identifier(name));
	if (!planner_names_callback)
	{
		CacheRegisterSyscacheCallback(PROCOID, planner_names_reset, (Datum) 0);
		planner_names_callback = true;
	}
	if (n_planner_names < MAX_PLANNER_NAMES)
	{
		planner_names[n_planner_names].method =
			method == NULL ? NULL : MemoryContextStrdup(TopMemoryContext, method);
		planner_names[n_planner_names].planner =
			planner == NULL ? NULL : MemoryContextStrdup(TopMemoryContext, planner);
		n_planner_names++;
	}
	return planner;
}

Datum
mmr_composed_search(PG_FUNCTION_ARGS)
{
	return search_entry(fcinfo, NULL, composed_planner, NULL, "mmr._composed_search_general");
}

/* One vector leg of WeiMoCIR (mmr._leg_agg): the keys and scores of the n nearest rows, best
 * first, from the space's cached leg_agg statement; a short scan runs again with iterative
 * scans on (once per call, as mmr._leg_agg); empty arrays when the space has no rows. */
static void
run_leg(const char *sql, Oid vector_type, Datum query, int32 n, Datum *keys, Datum *scores)
{
	Oid			types[2] = {vector_type, INT4OID};
	Datum		args[2] = {query, Int32GetDatum(n)};
	bool		null_keys;
	bool		null_scores;

	for (int attempt = 0; attempt < 2; attempt++)
	{
		int			got = 0;

		if (SPI_execute_plan(statement_plan(sql, 2, types), args, NULL, true, 1) != SPI_OK_SELECT
			|| SPI_processed != 1)
			elog(ERROR, "pg_mmretrieval native: a WeiMoCIR leg failed");
		*keys = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &null_keys);
		*scores = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &null_scores);
		if (!null_keys)
			got = ArrayGetNItems(ARR_NDIM(DatumGetArrayTypeP(*keys)),
								 ARR_DIMS(DatumGetArrayTypeP(*keys)));
		if (got >= n || attempt == 1
			|| strcmp(GetConfigOption("hnsw.iterative_scan", false, false), "off") != 0)
			break;
		top_up_scan();
	}
	*keys = null_keys ? PointerGetDatum(construct_empty_array(JSONBOID)) : datumCopy(*keys, false, -1);
	*scores = null_scores ? PointerGetDatum(construct_empty_array(FLOAT8OID))
		: datumCopy(*scores, false, -1);
}

/* The scores of the rows `keys` (jsonb[]) to `query` in a space (its cached sims_of
 * statement), as float8[]; empty when there are no keys. */
static Datum
scores_of(const char *sims_of, Datum keys, Datum query, Oid vector_type)
{
	Oid			types[2] = {JSONBARRAYOID, vector_type};
	Datum		args[2] = {keys, query};
	ArrayType  *a = DatumGetArrayTypeP(keys);
	Datum		scores;
	bool		isnull = true;

	scores = ArrayGetNItems(ARR_NDIM(a), ARR_DIMS(a)) > 0
		? value_of(sims_of, 2, types, args, NULL, &isnull) : (Datum) 0;
	return isnull ? PointerGetDatum(construct_empty_array(FLOAT8OID)) : scores;
}

/*
 * WeiMoCIR with one caption space, reference by stored key (mmr._composed_search_key_plpgsql's
 * fast path and mmr._weimocir_fast, with kept plans), once run_key_fast has checked the call and
 * fetched the reference's embedding `ref` in `space`: both spaces stored as `vector`, params
 * among exclude_reference, caption_space (a string), alpha, beta, candidates (numbers), beta not
 * 0.  False for anything else (mmr._fast_plan then declines too, and the general path decides).
 */
static bool
run_weimocir_key(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo, const FastSpace *space,
				 PgVector *ref, bool exclude)
{
	static const char *const names[] = {"exclude_reference", "caption_space", "alpha", "beta",
	"candidates"};
	Oid			vector_type = get_fn_expr_argtype(fcinfo->flinfo, 3);
	Jsonb	   *params = PG_GETARG_JSONB_P(6);
	JsonbValue	v;
	JsonbValue	caption;
	double		beta = num_param(fcinfo, "beta", 0.1);
	int32		k = PG_GETARG_INT32(5);
	int32		n;
	char	   *cap_stmt[3];	/* the caption space's embedding_of, leg_agg, sims_of */
	PgVector   *refcap;
	PgVector   *mod;
	Datum		qi,
				qc,
				ki,
				si,
				kc,
				sc,
				mi,
				mc;
	bool		isnull;

	char	   *leg_agg_sql = space_sql(space, "leg_agg");
	char	   *sims_of_sql = space_sql(space, "sims_of");

	if (PG_ARGISNULL(3) || !space->plain_vector || leg_agg_sql == NULL || sims_of_sql == NULL
		|| !params_within(params, names, lengthof(names), false))
		return false;
	if (getKeyJsonValueFromContainer(&params->root, "caption_space", 13, &caption) == NULL
		|| caption.type != jbvString)
		return false;
	for (int i = 2; i < 5; i++)
		if (getKeyJsonValueFromContainer(&params->root, names[i], strlen(names[i]), &v) != NULL
			&& v.type != jbvNumeric)
			return false;
	if (beta == 0)
		return false;
	{
		Oid			types[2] = {INT4OID, TEXTOID};
		Datum		args[2] = {Int32GetDatum(space->id),
		PointerGetDatum(cstring_to_text_with_len(caption.val.string.val, caption.val.string.len))};

		if (!one_row("SELECT x.statements ->> 'embedding_of', x.statements ->> 'leg_agg', "
					 "x.statements ->> 'sims_of' "
					 "FROM mmr._space s JOIN mmr._space x ON x.collection_id = s.collection_id "
					 "WHERE s.id = $1 AND x.name = $2 AND x.active AND x.statements IS NOT NULL "
					 "AND x.storage = 'vector' AND x.dimensions = s.dimensions",
					 2, types, args, NULL))
			return false;
		for (int i = 0; i < 3; i++)
			if ((cap_stmt[i] = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, i + 1))
				== NULL)
				return false;
	}
	{
		Oid			types[1] = {JSONBOID};
		Datum		args[1] = {PG_GETARG_DATUM(2)};
		Datum		value = value_of(cap_stmt[0], 1, types, args, NULL, &isnull);

		refcap = isnull ? NULL : (PgVector *) PG_DETOAST_DATUM(value);
	}
	mod = (PgVector *) PG_DETOAST_DATUM(PG_GETARG_DATUM(3));
	if (check_vector(refcap, space) == NULL || check_vector(mod, space) == NULL)
		return false;
	n = candidates(fcinfo, k + 1, Max(4 * k, 40));
	raise_ef_search(n, fcinfo, 8);
	{
		Oid			types[3] = {vector_type, vector_type, FLOAT8OID};
		Datum		args[3] = {PointerGetDatum(ref), PointerGetDatum(mod),
		Float8GetDatum(num_param(fcinfo, "alpha", 0.8))};
		const char *fuse = "SELECT mmr.vec_normalize(mmr.vec_mix($1, $2, $3))";

		qi = value_of(fuse, 3, types, args, NULL, &isnull);
		if (isnull)
			return false;
		args[0] = PointerGetDatum(refcap);
		qc = value_of(fuse, 3, types, args, NULL, &isnull);
		if (isnull)
			return false;
	}
	run_leg(leg_agg_sql, vector_type, qi, n, &ki, &si);
	run_leg(cap_stmt[1], vector_type, qc, n, &kc, &sc);
	{
		Oid			types[2] = {JSONBARRAYOID, JSONBARRAYOID};
		Datum		args[2] = {kc, ki};

		mi = value_of("SELECT mmr._keys_except($1, $2)", 2, types, args, NULL, &isnull);
		if (isnull)
			return false;
		args[0] = ki;
		args[1] = kc;
		mc = value_of("SELECT mmr._keys_except($1, $2)", 2, types, args, NULL, &isnull);
		if (isnull)
			return false;
	}
	{
		Oid			types[11] = {JSONBARRAYOID, JSONBARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID,
			JSONBARRAYOID, JSONBARRAYOID, FLOAT8ARRAYOID, FLOAT8ARRAYOID, FLOAT8OID, INT4OID,
		JSONBOID};
		Datum		args[11] = {ki, mi, si, scores_of(sims_of_sql, mi, qi, vector_type),
			kc, mc, sc, scores_of(cap_stmt[2], mc, qc, vector_type), Float8GetDatum(beta),
		Int32GetDatum(k), exclude ? PG_GETARG_DATUM(2) : (Datum) 0};
		char		nulls[11] = {' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ', ' ',
		exclude ? ' ' : 'n'};

		if (SPI_execute_plan(statement_plan(
			"SELECT key, score FROM mmr._weimocir_fuse($1 || $2, $3 || $4, $5 || $6, $7 || $8, "
			"$9, $10, $11)", 11, types), args, nulls, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval native: WeiMoCIR fusion failed");
		append_rows(rsinfo);
	}
	return true;
}

/*
 * mmr.composed_search with the reference as a stored row's key, under the conditions of
 * mmr._composed_search_key_plpgsql's fast path: the row's embedding from the space's cached
 * statement, then WeiMoCIR with a caption space (run_weimocir_key) or the mmr._fast_plan
 * methods with the reference left out unless exclude_reference is false.  Everything else goes
 * to mmr._composed_search_key_plpgsql.
 */
static bool
run_key_fast(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo)
{
	static const char *const methods[] = {"image_only", "text_only", "weighted", "slerp",
	"score_sum", "product", "weimocir"};
	bool		known = false;
	bool		exclude = true;
	FastSpace	space;
	char	   *embedding_of;
	Datum		ref;
	bool		isnull;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		return false;
	if (!PG_ARGISNULL(7) || !fast_path_allowed(fcinfo, 9) || !PG_ARGISNULL(10))
		return false;
	if (!fast_bounds(fcinfo, 5, MAX_K - 1, 8))
		return false;
	for (int i = 0; i < (int) lengthof(methods); i++)
		known = known || is_method(fcinfo, methods[i]);
	if (!known)
		return false;
	if (!PG_ARGISNULL(6))
	{
		JsonbValue	excl;

		if (getKeyJsonValueFromContainer(&PG_GETARG_JSONB_P(6)->root, "exclude_reference", 17,
										 &excl) != NULL)
		{
			if (excl.type != jbvBool)
				return false;
			exclude = excl.val.boolean;
		}
	}
	if (!lookup_space(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), &space)
		|| (embedding_of = space_sql(&space, "embedding_of")) == NULL)
		return false;
	{
		Oid			types[1] = {JSONBOID};
		Datum		args[1] = {PG_GETARG_DATUM(2)};

		ref = value_of(embedding_of, 1, types, args, NULL, &isnull);
		if (isnull)
			return false;
	}
	if (is_method(fcinfo, "weimocir") && !PG_ARGISNULL(6)
		&& check_vector((PgVector *) PG_DETOAST_DATUM(ref), &space) != NULL
		&& run_weimocir_key(fcinfo, rsinfo, &space, (PgVector *) PG_DETOAST_DATUM(ref), exclude))
		return true;
	return run_fast_plan(fcinfo, rsinfo, space.id, ref,
						 exclude ? PG_GETARG_DATUM(2) : (Datum) 0, true);
}

Datum
mmr_composed_search_key(PG_FUNCTION_ARGS)
{
	return search_entry(fcinfo, NULL, NULL, run_key_fast, "mmr._composed_search_key_plpgsql");
}

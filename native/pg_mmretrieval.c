/*
 * pg_mmretrieval native module: an executor of SQL-planned searches without a PL/pgSQL layer.
 *
 * Why: measured on a 100k x 512 HNSW index (bench/search_overhead.py), PL/pgSQL dispatch on
 * collection and space names costs 10-15 % of a bare `ORDER BY embedding <=> q LIMIT k`,
 * because `RETURN QUERY EXECUTE` plans the statement on every call and the function runs
 * through the PL/pgSQL executor.  This module keeps one generic plan per statement text and
 * argument types (SPI_keepplan) for the session and runs it directly.
 *
 * What: mmr.search and both overloads of mmr.composed_search, each with the same contract as
 * its PL/pgSQL reference function (mmr._search_plpgsql, mmr._composed_search_plpgsql,
 * mmr._composed_search_key_plpgsql).  The module is an executor only: no eligibility rules, no
 * vector math, no method list.  For each call it asks the SQL planner (mmr._search_exec_plan;
 * the by-vector method's builder that mmr._composed_fast_planner names; for a stored reference
 * key mmr._composed_key_exec_plan) for a plan (mmr._exec_plan, fields by name), the same
 * planner the reference functions ask, and runs it (run_plan):
 *   1. hnsw.ef_search set to the plan's ef_search for the call;
 *   2. the plan's statement with the plan fields its `args` name as $1, $2, ... (a kept plan,
 *      built under the functions' default index settings, hnsw.iterative_scan off);
 *   3. when the statement returns fewer than k rows and the plan has a rest: mmr._exec_rest
 *      (strict-order iterative scans; a rare path).
 * A call without a plan is handed unchanged to the general-path function (mmr._search_general,
 * mmr._composed_search_general, mmr._composed_search_key_general), which the reference calls
 * too, so errors and general-path behaviour are one implementation.  The function's SET
 * clauses (search_path, hnsw.*) scope every setting to the call, exactly as for the PL/pgSQL
 * function.
 *
 * sql/idempotent/089-native.sql binds the public functions to this module when the library
 * loads and its ABI matches MMR_NATIVE_ABI; otherwise they are the PL/pgSQL functions
 * themselves.
 *
 * Over ~400 lines: the kept statements, the plan's fields and the three entry points share one
 * SPI session and cache; the vector primitives (vector_ops.c) and the statement memo (memo.c)
 * are separate files.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "executor/executor.h"
#include "executor/spi.h"
#include "executor/spi_priv.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/inval.h"
#include "lib/stringinfo.h"
#include "utils/array.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/resowner.h"
#include "utils/syscache.h"
#include "utils/tuplestore.h"
#include "utils/typcache.h"

PG_MODULE_MAGIC;

/* Bumped whenever the SQL side this file calls changes (the planners mmr._search_exec_plan,
 * mmr._composed_fast_planner and mmr._composed_key_exec_plan, the plan type mmr._exec_plan's
 * field names, the general-path functions' signatures); 089-native.sql checks it.  2: the
 * executor runs SQL-planned statements (issue 14, item 1).  3: a call without a plan goes to the
 * general-path functions (mmr._search_general, mmr._composed_search_general).  4: the by-key
 * overload too (mmr._composed_key_exec_plan, else mmr._composed_search_key_general), and plans
 * carry `iterative` (hnsw.iterative_scan for the call) and `planning` (kept in the HNSW shape,
 * or planned per call): the filtered fast path of mmr.search (revision 0008).  5: the statement
 * memo (mmr._memo_get, mmr._memo_put; native/memo.c, the same library).  6: mmr._kept_vector
 * (a statement's one value, with a kept plan: the by-key planner's embedding reads). */
#define MMR_NATIVE_ABI 6

#define MAX_CACHED 256
#define MAX_ARGS 13

/* How a kept statement is planned (a plan's `planning`). */
typedef enum Planning
{
	PLAN_KEPT,					/* NULL: one generic plan, built under the default settings */
	PLAN_HNSW_SHAPED,			/* 'generic': the same, built in the HNSW shape */
	PLAN_PER_CALL				/* 'custom': parsed once, planned on every call with its values */
} Planning;

typedef struct CachedStatement
{
	char	   *sql;
	int			nargs;
	Oid			types[MAX_ARGS];
	Planning	planning;
	SPIPlanPtr	plan;
} CachedStatement;

static CachedStatement cached[MAX_CACHED];
static int	n_cached = 0;

PG_FUNCTION_INFO_V1(mmr_native_abi);
PG_FUNCTION_INFO_V1(mmr_search);
PG_FUNCTION_INFO_V1(mmr_composed_search);
PG_FUNCTION_INFO_V1(mmr_composed_search_key);
PG_FUNCTION_INFO_V1(mmr_kept_value);

Datum
mmr_native_abi(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT32(MMR_NATIVE_ABI);
}

/* Prepare and keep a statement for the session: generic plans only (no per-call planning), or
 * (per_call) custom plans only, the statement parsed and analyzed once. */
static SPIPlanPtr
keep_plan(const char *sql, int nargs, Oid *types, bool per_call)
{
	SPIPlanPtr	plan = SPI_prepare_cursor(sql, nargs, types,
										  per_call ? CURSOR_OPT_CUSTOM_PLAN
										  : CURSOR_OPT_GENERIC_PLAN);

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

/* The session's kept plan of a cached statement (same text, argument types and planning):
 * planned under the default index settings, in the HNSW shape when asked (build_plan), or
 * planned by PostgreSQL on every call (PLAN_PER_CALL: the plan cache re-plans with the call's
 * values, without parsing the statement again). */
static SPIPlanPtr
shaped_statement_plan(const char *sql, int nargs, const Oid *types, Planning planning)
{
	int			i;
	bool		hnsw_shaped = planning == PLAN_HNSW_SHAPED;

	Assert(nargs <= MAX_ARGS);
	for (i = 0; i < n_cached; i++)
		if (cached[i].nargs == nargs && cached[i].planning == planning
			&& strcmp(cached[i].sql, sql) == 0
			&& memcmp(cached[i].types, types, sizeof(Oid) * nargs) == 0)
		{
			if (planning != PLAN_PER_CALL && !plan_ready(cached[i].plan))
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
	cached[n_cached].plan = keep_plan(sql, nargs, (Oid *) types, planning == PLAN_PER_CALL);
	if (planning != PLAN_PER_CALL)
		build_plan(cached[n_cached].plan, hnsw_shaped);
	cached[n_cached].sql = MemoryContextStrdup(TopMemoryContext, sql);
	cached[n_cached].nargs = nargs;
	cached[n_cached].planning = planning;
	memcpy(cached[n_cached].types, types, sizeof(Oid) * nargs);
	return cached[n_cached++].plan;
}

/* The session's kept plan of a cached statement, planned under the default index settings. */
static SPIPlanPtr
statement_plan(const char *sql, int nargs, const Oid *types)
{
	return shaped_statement_plan(sql, nargs, types, PLAN_KEPT);
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
 * 'custom': parsed once, planned for each call with its values), then, when the statement
 * returned fewer than k rows and the plan has a rest, mmr._exec_rest (a rare path).
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
	Planning	how = PLAN_KEPT;
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
	if (planning == NULL)
		how = PLAN_KEPT;
	else if (strcmp(planning, "generic") == 0)
		how = PLAN_HNSW_SHAPED;
	else if (strcmp(planning, "custom") == 0)
		how = PLAN_PER_CALL;
	else
		elog(ERROR, "pg_mmretrieval native: a plan with planning \"%s\"", planning);
	ret = SPI_execute_plan(shaped_statement_plan(sql, nargs, types, how), args, nulls, true, 0);
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
 * copied out of SPI's result; false when it returns none, or one without a statement (the call
 * takes the general path). */
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
	/* A plan without a statement (a space whose cache lacks it) is no plan: the planners leave
	 * that check to the executors, so that a statement is read from the cache once. */
	(void) GetAttributeByName((HeapTupleHeader) DatumGetPointer(*plan), "sql", &isnull);
	return !isnull;
}

/* The name of the call's SQL planner, looked up by SQL (NULL: none, the general path). */
typedef const char *(*PlannerOf) (FunctionCallInfo fcinfo);

/*
 * A search entry point: the plan its SQL planner `planner` (or the one `planner_of` names for
 * the call) returns for the call, run; else (no planner, or no plan) the general-path function
 * `general` (PL/pgSQL) with the call's arguments unchanged (same argument types): the planner
 * already said no, so the general path runs without asking it again.
 */
static Datum
search_entry(FunctionCallInfo fcinfo, const char *planner, PlannerOf planner_of,
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
	else
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
	return search_entry(fcinfo, "mmr._search_exec_plan", NULL, "mmr._search_general");
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
	return search_entry(fcinfo, NULL, composed_planner, "mmr._composed_search_general");
}

/* mmr.composed_search with the reference as a stored row's key: the plan of
 * mmr._composed_key_exec_plan (which reads the reference's embedding and decides), else
 * mmr._composed_search_key_general. */
Datum
mmr_composed_search_key(PG_FUNCTION_ARGS)
{
	return search_entry(fcinfo, "mmr._composed_key_exec_plan", NULL,
						"mmr._composed_search_key_general");
}

/*
 * mmr._kept_vector(sql, key): the one value the statement `sql` returns with the key as $1 (one
 * column, of the function's result type), NULL when it returns no row; an error when it returns
 * more than one (too_many_rows, as PL/pgSQL's SELECT INTO STRICT) or another column than that
 * (datatype_mismatch).  It runs with the session's kept plan of its text (statement_plan), so a
 * SQL planner reads a stored row without parsing and planning a dynamic statement on every call
 * (mmr._composed_key_exec_plan: the reference's embedding by its space's embedding_of
 * statement).  SECURITY INVOKER and read-only: it runs what the calling user could run, with
 * that user's privileges and row-level security (the plan cache replans for another role
 * where a policy applies).
 */
Datum
mmr_kept_value(PG_FUNCTION_ARGS)
{
	char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(0));
	Oid			types[1] = {JSONBOID};
	Datum		args[1] = {PG_GETARG_DATUM(1)};
	Oid			rettype = get_func_rettype(fcinfo->flinfo->fn_oid);
	Datum		value = (Datum) 0;
	bool		isnull = true;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_mmretrieval native: SPI_connect failed");
	if (SPI_execute_plan(statement_plan(sql, 1, types), args, NULL, true, 2) != SPI_OK_SELECT)
		ereport(ERROR, (errcode(ERRCODE_WRONG_OBJECT_TYPE),
						errmsg("pg_mmretrieval native: \"%s\" is not a query", sql)));
	if (SPI_tuptable->tupdesc->natts != 1 || SPI_gettypeid(SPI_tuptable->tupdesc, 1) != rettype)
		ereport(ERROR, (errcode(ERRCODE_DATATYPE_MISMATCH),
						errmsg("pg_mmretrieval native: \"%s\" does not return one column of type %s",
							   sql, format_type_be(rettype))));
	if (SPI_processed > 1)
		ereport(ERROR, (errcode(ERRCODE_TOO_MANY_ROWS),
						errmsg("query returned more than one row")));
	if (SPI_processed == 1)
	{
		int16		typlen;
		bool		typbyval;

		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		get_typlenbyval(rettype, &typlen, &typbyval);
		if (!isnull)
			value = SPI_datumTransfer(value, typbyval, typlen);
	}
	SPI_finish();
	if (isnull)
		PG_RETURN_NULL();
	PG_RETURN_DATUM(value);
}

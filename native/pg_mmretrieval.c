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
 * mmr._search_plpgsql (sql/idempotent/040-search.sql), which stays the reference and the
 * general path: every call that is not the plain fast path (a filter, a reranker,
 * max_scan_tuples, k or ef_search out of range, an unknown space, a wrong dimension, a zero
 * vector, any NULL) is handed to it unchanged, so errors and general-path behaviour are one
 * implementation.  The fast path itself mirrors the PL/pgSQL one:
 *   1. the space's cached `search` statement (mmr._active_space);
 *   2. hnsw.ef_search raised to k (or to ef_search) for the call;
 *   3. the statement with hnsw.iterative_scan off (the function's SET clause);
 *   4. when the scan returns fewer than k rows (invisible index entries, a tiny table): the
 *      rest with strict-order iterative scans, past the rows already returned.
 * The function's SET clauses (search_path, hnsw.*) scope every setting to the call, exactly as
 * for the PL/pgSQL function.
 *
 * sql/idempotent/095-native.sql binds mmr.search to this module when the library loads and
 * its ABI matches MMR_NATIVE_ABI; otherwise mmr.search is the PL/pgSQL function itself.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "nodes/parsenodes.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/jsonb.h"
#include "utils/fmgrprotos.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/tuplestore.h"

PG_MODULE_MAGIC;

/* Bumped whenever the SQL side (mmr._search_plpgsql's signature, mmr._active_space's
 * columns) changes in a way this file depends on; 095-native.sql checks it. */
#define MMR_NATIVE_ABI 1

#define SEARCH_NARGS 10
#define MAX_K 1000
#define DEFAULT_EF 40
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
	SPIPlanPtr	plan;
} CachedStatement;

static CachedStatement cached[MAX_CACHED];
static int	n_cached = 0;

PG_FUNCTION_INFO_V1(mmr_native_abi);
PG_FUNCTION_INFO_V1(mmr_search);
PG_FUNCTION_INFO_V1(mmr_composed_search);

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

/* The session's kept plan of a cached statement (same text and argument types). */
static SPIPlanPtr
statement_plan(const char *sql, int nargs, const Oid *types)
{
	int			i;

	Assert(nargs <= MAX_ARGS);
	for (i = 0; i < n_cached; i++)
		if (cached[i].nargs == nargs && strcmp(cached[i].sql, sql) == 0
			&& memcmp(cached[i].types, types, sizeof(Oid) * nargs) == 0)
			return cached[i].plan;
	if (n_cached == MAX_CACHED)
	{
		/* Spaces come and go (switch_space): drop the oldest statement. */
		SPI_freeplan(cached[0].plan);
		pfree(cached[0].sql);
		memmove(&cached[0], &cached[1], sizeof(CachedStatement) * (MAX_CACHED - 1));
		n_cached--;
	}
	cached[n_cached].plan = keep_plan(sql, nargs, (Oid *) types);
	cached[n_cached].sql = MemoryContextStrdup(TopMemoryContext, sql);
	cached[n_cached].nargs = nargs;
	memcpy(cached[n_cached].types, types, sizeof(Oid) * nargs);
	return cached[n_cached++].plan;
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

		values[0] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &nulls[0]);
		values[1] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 2, &nulls[1]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
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

/* A general path: the PL/pgSQL reference function `sql` with the caller's arguments,
 * unchanged (errors and all). */
static void
run_general(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo, const char *sql, int nargs,
			const Oid *types)
{
	Datum		values[MAX_ARGS];
	char		nulls[MAX_ARGS];
	int			i;

	for (i = 0; i < nargs; i++)
	{
		values[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
		nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
	}
	if (SPI_execute_plan(statement_plan(sql, nargs, types), values, nulls, true, 0)
		!= SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: the general path failed");
	append_rows(rsinfo);
}

/* A space on the fast path (mmr._active_space, as a join: the SQL function is not inlined
 * and costs ~60 us per call as a function scan). */
typedef struct FastSpace
{
	int32		id;
	int32		dimensions;
	bool		cosine;
	char	   *search_sql;		/* statements ->> 'search': $1 vector, $2 k */
} FastSpace;

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
	if (SPI_execute_plan(statement_plan(
		"SELECT s.id, s.dimensions, s.distance, s.statements ->> 'search' "
		"FROM mmr._space s JOIN mmr._collection c ON c.id = s.collection_id "
		"WHERE c.name = $1 AND s.name = $2 AND s.active AND s.statements IS NOT NULL",
		2, types), args, NULL, true, 2) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: space look-up failed");
	if (SPI_processed != 1)
		return false;
	row = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	out->id = DatumGetInt32(SPI_getbinval(row, desc, 1, &null_id));
	out->dimensions = DatumGetInt32(SPI_getbinval(row, desc, 2, &null_dims));
	distance = SPI_getvalue(row, desc, 3);
	out->search_sql = SPI_getvalue(row, desc, 4);
	if (null_id || null_dims || distance == NULL || out->search_sql == NULL)
		return false;
	out->cosine = strcmp(distance, "cosine") == 0;
	return true;
}

/* A query vector the fast path accepts: the space's dimension, and not zero under cosine
 * (anything else is the general path's to reject, with its error). */
static PgVector *
fast_vector(FunctionCallInfo fcinfo, int arg, const FastSpace *space)
{
	PgVector   *v;

	if (PG_ARGISNULL(arg))
		return NULL;
	v = (PgVector *) PG_DETOAST_DATUM(PG_GETARG_DATUM(arg));
	if (v->dim != space->dimensions)
		return NULL;
	if (space->cosine)
	{
		double		norm = 0.0;

		for (int i = 0; i < v->dim; i++)
			norm += (double) v->x[i] * (double) v->x[i];
		if (!(norm > 0.0))
			return NULL;
	}
	return v;
}

/* One vector through the space's search statement: the k nearest rows, with hnsw.ef_search
 * raised to ef_rows (or to the ef_search argument), and a short scan topped up. */
static void
run_single(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo, const FastSpace *space,
		   PgVector *query, int32 k, int32 ef_rows, int ef_arg)
{
	Oid			types[2] = {get_fn_expr_argtype(fcinfo->flinfo, 2), INT4OID};
	Datum		args[2];
	uint64		got;

	raise_ef_search(ef_rows, fcinfo, ef_arg);
	args[0] = PointerGetDatum(query);
	args[1] = Int32GetDatum(k);
	if (SPI_execute_plan(statement_plan(space->search_sql, 2, types), args, NULL, true, 0)
		!= SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: search statement failed");
	got = SPI_processed;
	append_rows(rsinfo);
	if (got < (uint64) k)
	{
		/* Invisible index entries or a tiny table: the rest with iterative scans, past the
		 * rows already returned (see mmr._top_up_scan). */
		char	   *rest = psprintf("SELECT * FROM (%s) x OFFSET " UINT64_FORMAT,
									space->search_sql, got);

		top_up_scan();
		if (SPI_execute_with_args(rest, 2, types, args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval native: top-up scan failed");
		append_rows(rsinfo);
	}
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

/* mmr.search's fast path; false when the call belongs to the general path. */
static bool
run_fast(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo)
{
	FastSpace	space;
	PgVector   *query;
	int32		k;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(2))
		return false;
	if (!PG_ARGISNULL(4) || !PG_ARGISNULL(6) || !PG_ARGISNULL(7))
		return false;
	if (!fast_bounds(fcinfo, 3, MAX_K, 5))
		return false;
	if (!lookup_space(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), &space))
		return false;
	if ((query = fast_vector(fcinfo, 2, &space)) == NULL)
		return false;
	k = PG_GETARG_INT32(3);
	run_single(fcinfo, rsinfo, &space, query, k, k, 5);
	return true;
}

Datum
mmr_search(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_mmretrieval native: SPI_connect failed");
	if (!run_fast(fcinfo, rsinfo))
	{
		Oid			types[10] = {TEXTOID, TEXTOID, get_fn_expr_argtype(fcinfo->flinfo, 2),
		INT4OID, JSONBOID, INT4OID, INT4OID, TEXTOID, INT4OID, JSONBOID};

		run_general(fcinfo, rsinfo,
					"SELECT key, score FROM mmr._search_plpgsql($1, $2, $3, $4, $5, $6, $7, $8, "
					"$9, $10)", 10, types);
	}
	SPI_finish();
	return (Datum) 0;
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

static bool
no_params(FunctionCallInfo fcinfo)
{
	Jsonb	   *params;

	if (PG_ARGISNULL(6))
		return true;
	params = PG_GETARG_JSONB_P(6);
	return JB_ROOT_IS_OBJECT(params) && JB_ROOT_COUNT(params) == 0;
}

/* params holds nothing but a numeric alpha (or nothing): set *alpha from it. */
static bool
alpha_param(FunctionCallInfo fcinfo, double *alpha)
{
	Jsonb	   *params;
	JsonbValue	value;

	if (no_params(fcinfo))
		return true;
	params = PG_GETARG_JSONB_P(6);
	if (!JB_ROOT_IS_OBJECT(params) || JB_ROOT_COUNT(params) != 1
		|| getKeyJsonValueFromContainer(&params->root, "alpha", 5, &value) == NULL
		|| value.type != jbvNumeric)
		return false;
	*alpha = DatumGetFloat8(DirectFunctionCall1(numeric_float8,
												NumericGetDatum(value.val.numeric)));
	return true;
}

static bool
run_composed_fast(FunctionCallInfo fcinfo, ReturnSetInfo *rsinfo)
{
	Oid			vector_type = get_fn_expr_argtype(fcinfo->flinfo, 2);
	Oid			plan_types[6] = {INT4OID, vector_type, vector_type, TEXTOID, JSONBOID, INT4OID};
	Datum		plan_args[6];
	char		plan_nulls[6];
	Oid			types[5] = {get_array_type(vector_type), INT4OID, JSONBOID, INT4OID, JSONBOID};
	Datum		args[5];
	char		nulls[5] = {' ', ' ', 'n', ' ', 'n'};
	FastSpace	space;
	HeapTuple	row;
	TupleDesc	desc;
	bool		isnull;
	char	   *sql;
	char	   *pair_sql;
	int32		n;
	int32		k;
	int			n_vecs;
	uint64		got;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		return false;
	if (!PG_ARGISNULL(7) || !PG_ARGISNULL(9) || !PG_ARGISNULL(10))
		return false;
	if (!fast_bounds(fcinfo, 5, MAX_K - 1, 8))
		return false;
	k = PG_GETARG_INT32(5);
	if (!lookup_space(PG_GETARG_DATUM(0), PG_GETARG_DATUM(1), &space))
		return false;

	/* image_only / text_only: the reference (or the modifier) through the search statement,
	 * as mmr._fast_plan's `single` statement with k + 1 rows per scan (its ef_search). */
	if (no_params(fcinfo) && (is_method(fcinfo, "image_only") || is_method(fcinfo, "text_only")))
	{
		PgVector   *ref = fast_vector(fcinfo, 2, &space);
		PgVector   *query = ref;

		if (ref != NULL && is_method(fcinfo, "text_only"))
			query = fast_vector(fcinfo, 3, &space);
		if (query == NULL)
			return false;
		run_single(fcinfo, rsinfo, &space, query, k, k + 1, 8);
		return true;
	}

	/* weighted / slerp: the fused vector (mmr.vec_lerp / mmr.vec_slerp, as mmr._fast_plan
	 * computes it) through the search statement. */
	if (is_method(fcinfo, "weighted") || is_method(fcinfo, "slerp"))
	{
		PgVector   *ref = fast_vector(fcinfo, 2, &space);
		PgVector   *mod = ref == NULL ? NULL : fast_vector(fcinfo, 3, &space);
		double		alpha = 0.5;

		if (mod != NULL && alpha_param(fcinfo, &alpha))
		{
			Oid			fuse_types[3] = {vector_type, vector_type, FLOAT8OID};
			Datum		fuse_args[3] = {PointerGetDatum(ref), PointerGetDatum(mod),
			Float8GetDatum(alpha)};
			PgVector   *fused;

			if (SPI_execute_plan(statement_plan(is_method(fcinfo, "weighted")
												? "SELECT mmr.vec_lerp($1, $2, $3)"
												: "SELECT mmr.vec_slerp($1, $2, $3)",
												3, fuse_types),
								 fuse_args, NULL, true, 1) != SPI_OK_SELECT
				|| SPI_processed != 1)
				elog(ERROR, "pg_mmretrieval native: query fusion failed");
			fused = (PgVector *) PG_DETOAST_DATUM_COPY(SPI_getbinval(SPI_tuptable->vals[0],
																	  SPI_tuptable->tupdesc, 1,
																	  &isnull));
			if (isnull)
				return false;
			run_single(fcinfo, rsinfo, &space, fused, k, k + 1, 8);
			return true;
		}
	}

	/* Every other method: mmr._fast_plan decides and builds the query vectors. */
	plan_args[0] = Int32GetDatum(space.id);
	plan_nulls[0] = ' ';
	for (int i = 1; i < 6; i++)
	{
		int			arg = i == 1 ? 2 : i == 2 ? 3 : i == 3 ? 4 : i == 4 ? 6 : 5;

		plan_args[i] = PG_ARGISNULL(arg) ? (Datum) 0 : PG_GETARG_DATUM(arg);
		plan_nulls[i] = PG_ARGISNULL(arg) ? 'n' : ' ';
	}
	if (SPI_execute_plan(statement_plan(
		"SELECT p.sql, p.vecs, p.n, cardinality(p.vecs), p.aux ->> 'sql' "
		"FROM mmr._space s, mmr._fast_plan(s, $2, $3, $4, $5, $6, NULL) p "
		"WHERE s.id = $1 AND p.sql IS NOT NULL", 6, plan_types),
						 plan_args, plan_nulls, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: composed plan failed");
	if (SPI_processed != 1)
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
	args[4] = (Datum) 0;

	raise_ef_search(n, fcinfo, 8);
	if (SPI_execute_plan(statement_plan(sql, 5, types), args, nulls, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "pg_mmretrieval native: composed statement failed");
	got = SPI_processed;
	append_rows(rsinfo);
	/* mmr._fast_rerun: a short single-vector scan continues past its rows; a checked pair
	 * statement that returned nothing (a leg came back short) reruns in its plain form. */
	if (got < (uint64) k && (n_vecs == 1 || got == 0))
	{
		char	   *rest = n_vecs == 1
			? psprintf("SELECT * FROM (%s) x OFFSET " UINT64_FORMAT, sql, got)
			: pair_sql;

		if (rest == NULL)
			elog(ERROR, "pg_mmretrieval native: no plain statement to rerun");
		top_up_scan();
		if (SPI_execute_with_args(rest, 5, types, args, nulls, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval native: composed top-up failed");
		append_rows(rsinfo);
	}
	return true;
}

Datum
mmr_composed_search(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "pg_mmretrieval native: SPI_connect failed");
	if (!run_composed_fast(fcinfo, rsinfo))
	{
		Oid			vector_type = get_fn_expr_argtype(fcinfo->flinfo, 2);
		Oid			types[13] = {TEXTOID, TEXTOID, vector_type, vector_type, TEXTOID, INT4OID,
			JSONBOID, JSONBOID, INT4OID, INT4OID, TEXTOID, INT4OID, JSONBOID};

		run_general(fcinfo, rsinfo,
					"SELECT key, score FROM mmr._composed_search_plpgsql($1, $2, $3, $4, $5, $6, "
					"$7, $8, $9, $10, $11, $12, $13)", 13, types);
	}
	SPI_finish();
	return (Datum) 0;
}

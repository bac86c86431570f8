/*
 * pg_mmretrieval vector primitives: vector math that a search statement calls, declared as
 * ordinary SQL functions (sql/idempotent/089-native.sql binds them when the library loads).
 * Not part of the executor (pg_mmretrieval.c), which plans and runs nothing here.
 *
 * mmr.gqr_refine(z, d, s2, a, t, lr, steps): GQR's query refinement (FUSION.md §2.3), the steps
 * of mmr._gqr_refine_plpgsql (sql/idempotent/022-fusion.sql) in double precision; its bounds
 * and ranges are checked by mmr._check_gqr, the one check of both implementations.
 */
#include "postgres.h"

#include <math.h>

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "fmgr.h"
#include "utils/array.h"
#include "utils/lsyscache.h"

/* pgvector's on-disk vector: varlena header, dim, unused, dim floats. */
typedef struct PgVector
{
	int32		vl_len_;
	int16		dim;
	int16		unused;
	float		x[FLEXIBLE_ARRAY_MEMBER];
} PgVector;

/* The kept plan of mmr._check_gqr (one per session). */
static SPIPlanPtr check_plan = NULL;

PG_FUNCTION_INFO_V1(mmr_gqr_refine);

/* softmax(x / t) into out (max-shifted, as mmr.softmax). */
static void
softmax(const double *x, int n, double t, double *out)
{
	double		mx = x[0];
	double		tot = 0.0;

	for (int i = 1; i < n; i++)
		mx = Max(mx, x[i]);
	for (int i = 0; i < n; i++)
	{
		out[i] = exp((x[i] - mx) / t);
		tot += out[i];
	}
	for (int i = 0; i < n; i++)
		out[i] /= tot;
}

static double
dot(const PgVector *a, const PgVector *b)
{
	double		sum = 0.0;

	for (int i = 0; i < a->dim; i++)
		sum += (double) a->x[i] * (double) b->x[i];
	return sum;
}

/*
 * mmr.gqr_refine(z, d, s2, a, t, lr, steps): the steps of mmr._gqr_refine_plpgsql (FUSION.md
 * §2.3: gradient descent on KL(m || softmax(z D^T / t)), run on the coefficients of z in
 * z0 + span(d) with the Gram matrix) in double precision.  NULL arguments or elements, and
 * vectors of another dimension than z, go to the PL/pgSQL function (its result or its error).
 */
Datum
mmr_gqr_refine(PG_FUNCTION_ARGS)
{
	Oid			vector_type = get_fn_expr_argtype(fcinfo->flinfo, 0);
	PgVector   *z;
	ArrayType  *d_arr;
	ArrayType  *s2_arr;
	Datum	   *d_elems;
	bool	   *d_nulls;
	Datum	   *s2_elems;
	bool	   *s2_nulls;
	int			n;
	int			n_s2;
	double		a,
				t,
				lr;
	int32		steps;
	PgVector  **d;
	double	   *b,
			   *s2,
			   *target,
			   *p,
			   *gram,
			   *c,
			   *sc;
	PgVector   *result;
	bool		delegate = false;

	for (int i = 0; i < 7; i++)
		delegate = delegate || PG_ARGISNULL(i);
	if (!delegate)
	{
		int16		typlen;
		bool		typbyval;
		char		typalign;

		z = (PgVector *) PG_DETOAST_DATUM(PG_GETARG_DATUM(0));
		d_arr = PG_GETARG_ARRAYTYPE_P(1);
		s2_arr = PG_GETARG_ARRAYTYPE_P(2);
		get_typlenbyvalalign(ARR_ELEMTYPE(d_arr), &typlen, &typbyval, &typalign);
		deconstruct_array(d_arr, ARR_ELEMTYPE(d_arr), typlen, typbyval, typalign, &d_elems,
						  &d_nulls, &n);
		deconstruct_array(s2_arr, FLOAT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE, &s2_elems,
						  &s2_nulls, &n_s2);
		for (int i = 0; i < n && !delegate; i++)
		{
			CHECK_FOR_INTERRUPTS();
			delegate = d_nulls[i] || ((PgVector *) PG_DETOAST_DATUM(d_elems[i]))->dim != z->dim;
		}
		for (int i = 0; i < n_s2; i++)
			delegate = delegate || s2_nulls[i];
	}
	if (delegate)
	{
		Oid			types[7] = {vector_type, get_array_type(vector_type), FLOAT8ARRAYOID,
		FLOAT8OID, FLOAT8OID, FLOAT8OID, INT4OID};
		Datum		args[7];
		char		nulls[7];
		Datum		value;
		bool		isnull;

		for (int i = 0; i < 7; i++)
		{
			args[i] = PG_ARGISNULL(i) ? (Datum) 0 : PG_GETARG_DATUM(i);
			nulls[i] = PG_ARGISNULL(i) ? 'n' : ' ';
		}
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "pg_mmretrieval vector_ops: SPI_connect failed");
		if (SPI_execute_with_args("SELECT mmr._gqr_refine_plpgsql($1, $2, $3, $4, $5, $6, $7)",
								  7, types, args, nulls, true, 2) != SPI_OK_SELECT
			|| SPI_processed != 1)
			elog(ERROR, "pg_mmretrieval vector_ops: mmr._gqr_refine_plpgsql failed");
		value = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		value = isnull ? (Datum) 0 : SPI_datumTransfer(value, false, -1);
		SPI_finish();
		if (isnull)
			PG_RETURN_NULL();
		PG_RETURN_DATUM(value);
	}
	if (n != n_s2)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("gqr_refine: %d candidate vectors but %d complementary scores", n, n_s2)));
	a = PG_GETARG_FLOAT8(3);
	t = PG_GETARG_FLOAT8(4);
	lr = PG_GETARG_FLOAT8(5);
	steps = PG_GETARG_INT32(6);
	{
		/* The bounds (steps, candidate vectors) and ranges (t > 0, 0 <= a <= 1, lr >= 0):
		 * mmr._check_gqr, the one check of both implementations. */
		Oid			types[5] = {INT4OID, FLOAT8OID, FLOAT8OID, FLOAT8OID, FLOAT8OID};
		Datum		args[5] = {Int32GetDatum(n), Float8GetDatum(a), Float8GetDatum(t),
		Float8GetDatum(lr), Float8GetDatum((double) steps)};

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "pg_mmretrieval vector_ops: SPI_connect failed");
		if (check_plan == NULL)
		{
			SPIPlanPtr	plan = SPI_prepare("SELECT mmr._check_gqr($1, $2, $3, $4, $5)", 5, types);

			if (plan == NULL || SPI_keepplan(plan) != 0)
				elog(ERROR, "pg_mmretrieval vector_ops: cannot prepare mmr._check_gqr");
			check_plan = plan;
		}
		if (SPI_execute_plan(check_plan, args, NULL, true, 2) != SPI_OK_SELECT)
			elog(ERROR, "pg_mmretrieval vector_ops: mmr._check_gqr failed");
		SPI_finish();
	}
	if (n == 0 || steps == 0)
		PG_RETURN_POINTER(z);

	d = palloc(sizeof(PgVector *) * n);
	b = palloc(sizeof(double) * n);
	s2 = palloc(sizeof(double) * n);
	target = palloc(sizeof(double) * n);
	p = palloc(sizeof(double) * n);
	sc = palloc(sizeof(double) * n);
	c = palloc0(sizeof(double) * n);
	gram = palloc(sizeof(double) * n * n);
	for (int i = 0; i < n; i++)
	{
		d[i] = (PgVector *) PG_DETOAST_DATUM(d_elems[i]);
		s2[i] = DatumGetFloat8(s2_elems[i]);
	}
	/* Every loop below is O(n^2 dim) or O(steps n^2): cancellable (statement_timeout, a
	 * cancel request) once per row of the Gram matrix and once per row of each step. */
	for (int i = 0; i < n; i++)
	{
		CHECK_FOR_INTERRUPTS();
		b[i] = dot(z, d[i]);
		for (int j = 0; j <= i; j++)
			gram[i * n + j] = gram[j * n + i] = dot(d[i], d[j]);
	}
	/* m = (1 - a) softmax(b / t) + a softmax(s2 / t) (mmr.gqr_target) */
	softmax(b, n, t, target);
	softmax(s2, n, t, p);
	for (int i = 0; i < n; i++)
		target[i] = (1 - a) * target[i] + a * p[i];
	for (int step = 0; step < steps; step++)
	{
		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < n; i++)
		{
			if ((i & 63) == 63)
				CHECK_FOR_INTERRUPTS();
			sc[i] = b[i];
			for (int j = 0; j < n; j++)
				sc[i] += gram[i * n + j] * c[j];
		}
		softmax(sc, n, t, p);
		for (int i = 0; i < n; i++)
			c[i] -= lr * (p[i] - target[i]) / t;
	}
	result = (PgVector *) palloc0(VARSIZE(z));
	SET_VARSIZE(result, VARSIZE(z));
	result->dim = z->dim;
	for (int k = 0; k < z->dim; k++)
	{
		double		x = z->x[k];

		CHECK_FOR_INTERRUPTS();
		for (int i = 0; i < n; i++)
			x += c[i] * d[i]->x[k];
		result->x[k] = (float) x;
		/* Never a non-finite query (it would score NaN, or be stored as zeros): the same
		 * error as the PL/pgSQL implementation. */
		if (!isfinite(result->x[k]))
			ereport(ERROR,
					(errcode(ERRCODE_DATA_EXCEPTION),
					 errmsg("gqr_refine: the refined query is not finite"),
					 errhint("Lower lr or the number of steps, or raise the temperature; check "
							 "the candidate vectors for huge values.")));
	}
	PG_RETURN_POINTER(result);
}


// Journal: the broker's durable record of jobs, their stages and idempotency
// keys (SQLite through Storage, a committed write survives kill -9). It must
// not know how jobs are planned or routed.

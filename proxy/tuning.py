"""The proxy's measured constants: values an operator should not tune, each with its reason.

They were settings once. Nothing in the environment sets them now; `Settings(...)` takes another
value (tests, benchmarks), and a process a test starts reads one from the config file's
`[tuning]` table (proxy/config.py). Each name below is the field of `ProxyTuning` in capitals.
"""

from __future__ import annotations

from pydantic import BaseModel, Field

# -- the upstream (proxy/upstream.py, proxy/http1.py) ------------------------------------------
# A dead host fails in 10 s, a reachable one connects in milliseconds (chosen, not measured).
CONNECT_TIMEOUT = 10.0
# Upstream connections one worker keeps open (chosen, not measured): far above what one worker
# needs at saturation, 1,723 req/s on one core against a mock that answers at once
# (docs/benchmarks.md, Performance), so the pool never queues a request.
MAX_UPSTREAM_CONNECTIONS = 1000

# -- the ledger's writer (proxy/ledger/) --------------------------------------------------------
# Rows wait at most 50 ms before a batched write: 12-20k inference rows/s on PostgreSQL, 25-35k on
# SQLite, and a SIGKILL loses at most those 50 ms of rows, never acknowledged feedback
# (docs/operations.md, measured with two replicas on real PostgreSQL 15).
LEDGER_FLUSH_INTERVAL = 0.05
LEDGER_BATCH_SIZE = 512
# Bursts and database outages queue in memory, a full queue drops and counts
# (`speclearn_ledger_dropped_total`): 10,000 rows are 50 s of the slowest redaction measured, ~200
# rows/s of number-dense prompts (docs/data.md), and 200 s of a PostgreSQL outage at 50 requests/s
# a worker, in ~40 MB (a 1.5 KB prompt and a 1 KB answer hold ~3.9 KB a row, tracemalloc), well
# inside the 512 MiB a proxy pod may use (deploy/k8s).
LEDGER_QUEUE_SIZE = 10_000
# Feedback for an inference still queued (here or in another replica) waits for its row: 40 flush
# intervals, then a 404 for an id that never existed.
FEEDBACK_WAIT_SECONDS = 2.0

# -- the retention purge (proxy/retention.py) ----------------------------------------------------
# 1,000-row batches 50 ms apart: on a 1,000,000-row ledger the writer's p99 stayed at 79 ms (SQLite)
# and 22 ms (PostgreSQL) during the purge, where one DELETE stalled it 9 s (docs/data.md, bench.purge).
LEDGER_PURGE_BATCH = 1000
LEDGER_PURGE_PAUSE = 0.05
LEDGER_PURGE_INTERVAL = 3600.0  # hourly: retention is counted in days

# -- the spec registry (proxy/registry/) ----------------------------------------------------------
# Polling is the file registry's reload and PostgreSQL's fallback: NOTIFY reaches another replica in
# 10 ms median, polling alone in <= 0.52 s (docs/operations.md).
REGISTRY_POLL_INTERVAL = 0.5

# -- the embedded model `speclearn serve` starts (proxy/local_model/) -----------------------------
LOCAL_MODEL_PORT = 0  # any free port, announced in DATA_DIR/local-models (`local-model --port` picks one)
# llama.cpp's threads wait on each other: on a busy 2-core machine 2 threads fall to ~2 tok/s where
# 1 keeps ~12, hence cores - 1 (0 = that).
LOCAL_MODEL_THREADS = 0
# 4 slots for the compiler's 4 concurrent calls share one unified 16,384-token KV cache, 4,096
# tokens a slot on average: a spec, a question and an answer (`local-model --ctx/--parallel` differ).
LOCAL_MODEL_CTX = 16384
LOCAL_MODEL_PARALLEL = 4

# -- the console and feedback from browsers (proxy/console/, proxy/browser.py) -------------------
CONSOLE_SESSION_SECONDS = 8 * 3600  # a working day; rotating the admin key ends every session
# Token buckets per worker for feedback sent with a publishable key: a person's thumbs come seconds
# apart (1/s, a burst of 30 for a page that sends its backlog), and a key's 20/s is far below the
# ~770 durable feedback commits/s of PostgreSQL (docs/operations.md): they stop abuse, not users.
FEEDBACK_RATE_PER_KEY = 20.0
FEEDBACK_BURST_PER_KEY = 200
FEEDBACK_RATE_PER_ADDRESS = 1.0
FEEDBACK_BURST_PER_ADDRESS = 30


class ProxyTuning(BaseModel):
    """The constants above as fields of `Settings`: a constructor (or a `[tuning]` table) may
    change one for a test or a benchmark; the environment cannot."""

    connect_timeout: float = CONNECT_TIMEOUT
    max_upstream_connections: int = MAX_UPSTREAM_CONNECTIONS
    ledger_flush_interval: float = LEDGER_FLUSH_INTERVAL
    ledger_batch_size: int = LEDGER_BATCH_SIZE
    ledger_queue_size: int = LEDGER_QUEUE_SIZE
    feedback_wait_seconds: float = FEEDBACK_WAIT_SECONDS
    ledger_purge_batch: int = Field(LEDGER_PURGE_BATCH, ge=1, le=10_000)
    ledger_purge_pause: float = Field(LEDGER_PURGE_PAUSE, ge=0)
    ledger_purge_interval: float = Field(LEDGER_PURGE_INTERVAL, gt=0)
    registry_poll_interval: float = REGISTRY_POLL_INTERVAL
    local_model_port: int = LOCAL_MODEL_PORT
    local_model_threads: int = LOCAL_MODEL_THREADS
    local_model_ctx: int = LOCAL_MODEL_CTX
    local_model_parallel: int = LOCAL_MODEL_PARALLEL
    console_session_seconds: int = Field(CONSOLE_SESSION_SECONDS, ge=1)
    feedback_rate_per_key: float = Field(FEEDBACK_RATE_PER_KEY, gt=0)
    feedback_burst_per_key: int = Field(FEEDBACK_BURST_PER_KEY, ge=1)
    feedback_rate_per_address: float = Field(FEEDBACK_RATE_PER_ADDRESS, gt=0)
    feedback_burst_per_address: int = Field(FEEDBACK_BURST_PER_ADDRESS, ge=1)

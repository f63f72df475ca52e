# leadflow tasks. `just --list` shows them.

export SQLX_OFFLINE := "true"

# Run the service (intake + workers + operator API) on the private PostgreSQL unless DATABASE_URL is set
run *ARGS:
    cargo run --release -- {{ARGS}}

# Run the whole test suite against a real PostgreSQL
test *ARGS:
    cargo test {{ARGS}}

# Formatting and lints, as CI runs them
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
    cargo clippy --bins -- -D warnings

# Apply database migrations and exit
migrate:
    cargo run --release -- migrate

# Dashboards and alert rules against a real Prometheus (installs Debian's prometheus if absent)
monitoring-check:
    bash dashboards/check.sh

# Benchmark against pgbench and Graphile Worker on one PostgreSQL; rewrites the README's results
bench *ARGS:
    cargo build --release --bins --features testing
    target/release/bench --readme README.md {{ARGS}}

# What CI runs
ci:
    bash .ci/run

#!/bin/bash
# Needs PostgreSQL (127.0.0.1:5432, trust auth), Redis (127.0.0.1:6379) and nginx; run from anywhere:
#   CUST=10000 bash bench/multi_instance.sh
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# 1 instance (PG, no Redis), 1 instance (PG + Redis), 1 instance with --num_workers 2 (PG + Redis), 3 instances + Redis
# + PG behind nginx; c=64 JSON, 10k customers
WORK=$(mktemp -d); cd "$WORK"; pkill -f "haimaker --config .* --port 460[123]"; pkill -f "bench.upstream --port 4611"; sleep 1
DB=haimaker_bench_multi_$$
psql -h 127.0.0.1 -U postgres -d test -qc "CREATE DATABASE $DB" 
(cd $ROOT && setsid .venv/bin/python -m bench.upstream --port 4611 > /dev/null 2>&1 &)
mk() { # $1 = file, $2 = redis line
cat > $1 <<EOC
model_list:
  - model_name: fake-gpt
    litellm_params: {model: openai/gpt-3.5-turbo, api_base: "http://127.0.0.1:4611/v1", api_key: sk-fake}
general_settings:
  master_key: sk-1234
  database_url: postgresql://postgres@127.0.0.1:5432/$DB
$2
EOC
}
mk one.yaml ""
mk redis.yaml "  redis_url: redis://127.0.0.1:6379/0
  redis_key_prefix: bench-$$"
B='{"model":"fake-gpt","messages":[{"role":"user","content":"hello"}],"user":"{customer}"}'
load() { cd $ROOT; .venv/bin/python -m bench.load --url http://127.0.0.1:$1/v1/chat/completions -H 'Authorization: Bearer sk-1234' -c 64 -d 5 --warmup 1 --body "$B" --customers ${CUST:-10000}; cd "$WORK"; }
start() { (setsid $ROOT/.venv/bin/haimaker --config $1 --port $2 --host 127.0.0.1 > inst$2.log 2>&1 &); for i in $(seq 100); do curl -sf localhost:$2/health/readiness >/dev/null && break; sleep 0.2; done; }
# budget as default for everyone
start one.yaml 4601
curl -s -X POST localhost:4601/budget/new -H 'Authorization: Bearer sk-1234' -H 'Content-Type: application/json' -d '{"budget_id":"b","max_budget":1000000000,"rpm_limit":1000000000,"tpm_limit":1000000000000}' > /dev/null
pkill -f "haimaker --config .* --port 460[123]"; sleep 1
for f in one.yaml redis.yaml; do printf 'litellm_settings: {max_end_user_budget_id: b}\n' >> $f; done
start one.yaml 4601; echo -n "1 instance, PG, no Redis:     "; load 4601; pkill -f "haimaker --config .* --port 460[123]"; sleep 1
start redis.yaml 4601; echo -n "1 instance, PG + Redis:       "; load 4601; pkill -f "haimaker --config .* --port 460[123]"; sleep 1
(setsid $ROOT/.venv/bin/haimaker --config redis.yaml --port 4601 --host 127.0.0.1 --num_workers 2 > inst4601w.log 2>&1 &)
for i in $(seq 100); do curl -sf localhost:4601/health/readiness >/dev/null && break; sleep 0.2; done; sleep 2
echo -n "1 instance, 2 workers, Redis: "; load 4601; pkill -f "haimaker --config .* --port 460[123]"; sleep 2
start redis.yaml 4601; start redis.yaml 4602; start redis.yaml 4603
sed 's/4001/4601/; s/4002/4602/; s/4003/4603/; s/listen 4000/listen 4600/' $ROOT/examples/nginx.conf > nginx.conf
# The example as its header says: pid, temp files and logs under its prefix ($WORK).
nginx -p $WORK/ -c $WORK/nginx.conf -e stderr
sleep 1; echo -n "3 instances + Redis, nginx:   "; load 4600
nginx -p $WORK/ -c $WORK/nginx.conf -e stderr -s quit
pkill -f "haimaker --config .* --port 460[123]"; pkill -f "bench.upstream --port 4611"; sleep 2
psql -h 127.0.0.1 -U postgres -d test -qc "DROP DATABASE $DB WITH (FORCE)"
redis-cli --scan --pattern "bench-$$*" | xargs -r redis-cli del > /dev/null

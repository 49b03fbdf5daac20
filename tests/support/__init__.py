"""Helpers shared by every test folder, imported as `tests.support.<module>` (a helper one folder uses stays beside it).

- `proxy.py`: a real proxy on 127.0.0.1 (uvicorn in a thread); `process.py`: one as a subprocess (signals, kill -9).
- `fakes/`: fake OpenAI and Azure upstreams speaking the real wire formats on loopback.
- `databases.py`, `redis_servers.py`: a fresh database (SQLite or PostgreSQL) and a Redis key prefix per test; their
  fixtures reach every folder through `pytest_plugins` in tests/conftest.py.
- `factories.py`: `make_x(**overrides)` records; `relay.py`: a TCP relay a test can cut.
"""

# Shared by the bench scripts: source it. Sets PG* from DATABASE_URL so psql needs no password on
# its command line, and offers a free loopback port.
pg_env() {
  eval "$(python3 - <<'PY'
import os, urllib.parse as u
p = u.urlparse(os.environ["DATABASE_URL"])
for k, v in (("PGHOST", p.hostname), ("PGPORT", p.port or 5432), ("PGUSER", u.unquote(p.username or "")),
             ("PGPASSWORD", u.unquote(p.password or "")), ("PGDATABASE", p.path.lstrip("/"))):
    print(f"export {k}='{v}'")
PY
)"
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
# Sets REDISCLI_AUTH, REDISCLI host and port from REDIS_URL (redis-cli reads the password from the env).
redis_env() {
  eval "$(python3 - <<'PY'
import os, urllib.parse as u
p = u.urlparse(os.environ["REDIS_URL"])
print(f"export REDISCLI_AUTH='{u.unquote(p.password or '')}'")
print(f"export REDISCLI_HOST='{p.hostname}' REDISCLI_PORT='{p.port or 6379}'")
PY
)"
}

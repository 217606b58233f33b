#!/usr/bin/env python3
"""Cheap checks of the container files (no Docker engine needed)."""
import re
import sys
import tomllib

import yaml

errors = []


def need(cond, msg):
    if not cond:
        errors.append(msg)


compose = yaml.safe_load(open("docker-compose.yml"))
services = compose.get("services", {})
pg, rx = services.get("postgres", {}), services.get("receiver", {})
need(str(pg.get("image", "")).startswith("postgres:16"), "postgres must be postgres:16")
need("pg_isready" in str(pg.get("healthcheck", {}).get("test")), "postgres needs a pg_isready healthcheck")
need(any(str(v).startswith("pgdata:") for v in pg.get("volumes", [])), "postgres needs the named volume")
need("pgdata" in (compose.get("volumes") or {}), "named volume pgdata must be declared")
need(rx.get("depends_on", {}).get("postgres", {}).get("condition") == "service_healthy",
     "receiver must wait for a healthy postgres")
need(rx.get("env_file") == ".env", "receiver reads secrets from .env")
need("8080:8080" in [str(p) for p in rx.get("ports", [])], "receiver maps 8080")
env = rx.get("environment", {})
need("IMGGO__NETWORK__TRUSTED_PROXIES" in env, "receiver sets IMGGO__NETWORK__TRUSTED_PROXIES")
for name in ("IMGGO_WEBHOOK_SECRETS", "IMGGO_ENCRYPTION_KEYS", "IMGGO_HASH_KEY"):
    need(name not in env, f"{name} must come from .env, not the compose file")
# The spool on a named volume, so acknowledged deliveries outlive the container.
spool = str(env.get("IMGGO__SPOOL__PATH", ""))
mounts = [str(v).split(":")[:2] for v in rx.get("volumes", [])]
need(any(src in (compose.get("volumes") or {}) and spool.startswith(dst.rstrip("/") + "/")
         for src, dst in mounts), "IMGGO__SPOOL__PATH must lie on a named volume of the receiver")
# The Results API reachable from the host's loopback only.
api_ports = [str(p) for p in rx.get("ports", []) if str(p).split(":")[-1] == "8081"]
need(api_ports == ["127.0.0.1:8081:8081"], "the API port 8081 must be published on 127.0.0.1 only")
need(str(env.get("IMGGO__API__BIND", "")).endswith(":8081"), "receiver sets IMGGO__API__BIND to port 8081")
# File descriptors: a hard `nofile` with room for every listener's cap and
# what is set aside beside them (src/limits.rs), at the shipped defaults.
defaults = tomllib.load(open("config/default.toml", "rb"))
wanted = (defaults["server"]["max_connections"] + defaults["api"]["max_connections"]
          + 64 + 64 + defaults["database"]["max_connections"])
nofile = (rx.get("ulimits") or {}).get("nofile")
hard = nofile.get("hard") if isinstance(nofile, dict) else nofile
need(isinstance(hard, int) and hard >= wanted,
     f"receiver needs ulimits.nofile.hard >= {wanted} (the listeners' caps and the reserve)")
if isinstance(nofile, dict):
    need(nofile.get("soft", 0) <= nofile.get("hard", 0), "ulimits.nofile.soft must not exceed hard")

docker = open("Dockerfile").read()
need(re.search(r"cargo build --release --locked", docker), "build stage must use cargo build --release --locked")
need("cargo chef cook" in docker, "dependencies must be cached in their own layer")
need(re.search(r"^USER (?!root|0)", docker, re.M), "runtime must run as non-root")
need(re.search(r"^HEALTHCHECK .*\n?.*healthcheck", docker, re.M), "HEALTHCHECK must use the healthcheck subcommand")
need("STOPSIGNAL SIGTERM" in docker, "STOPSIGNAL SIGTERM")
need("EXPOSE 8080" in docker, "EXPOSE 8080")
need(re.search(r"^#.*nofile", docker, re.M), "the Dockerfile must say how nofile is set")
need(re.search(r"^COPY --from=builder --chown=65532:65532 \S+ /app/data$", docker, re.M),
     "the runtime's /app/data must be owned by UID 65532 (the spool's default place)")
need(not re.search(r"^(ENV|ARG) .*(SECRET|KEYS|HASH_KEY|PASSWORD)", docker, re.M), "no secret in any layer")

ignore = open(".dockerignore").read().split()
need("target/" in ignore and ".env" in ignore, ".dockerignore must keep target/ and .env out")
gitignore = open(".gitignore").read().split()
need(".env" in gitignore, ".env must be git-ignored")

if errors:
    print("deploy checks failed:\n- " + "\n- ".join(errors))
    sys.exit(1)
print("deploy checks: ok")

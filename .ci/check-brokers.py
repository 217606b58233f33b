#!/usr/bin/env python3
"""The forwarding tests publish to real brokers, run as services on the
machine: NATS (with JetStream) on 127.0.0.1:4222, RabbitMQ on 127.0.0.1:5672
and Redis on 127.0.0.1:6379. Each must answer in its own protocol (an open
port is not enough); the ones that do not are named, and CI stops here
rather than fail later in a test about something else.
"""
import socket
import sys

CHECKS = [
    # name, port, what to send, how its answer starts
    ("NATS", 4222, b"", b"INFO "),
    ("RabbitMQ", 5672, b"AMQP\x00\x00\x09\x01", b"\x01\x00\x00"),  # connection.start frame
    ("Redis", 6379, b"PING\r\n", b"+PONG"),
]


def answers(port, send, expect):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
            s.settimeout(3)
            if send:
                s.sendall(send)
            data = b""
            while len(data) < len(expect):
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(expect), data[:40]
    except OSError as e:
        return False, str(e).encode()


missing = []
for name, port, send, expect in CHECKS:
    ok, got = answers(port, send, expect)
    print(f"{name} 127.0.0.1:{port}: {'answers' if ok else 'MISSING'}" + ("" if ok else f" ({got!r})"))
    if not ok:
        missing.append(f"{name} (127.0.0.1:{port})")
if missing:
    print(f"missing: {', '.join(missing)}; start the service(s) before the tests", file=sys.stderr)
    sys.exit(1)

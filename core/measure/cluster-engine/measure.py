#!/usr/bin/env python3
"""Postgres against NATS JetStream as a relay cluster's change log, measured on this machine.

Starts its own throwaway servers on loopback (Debian's `postgresql` and `nats-server`), then for
each engine measures, with 200-byte changes (a chat change's size):

- append: one change at a time, each awaited until the engine acknowledges it durable (what a
  relay would wait for before acknowledging a device), latency p50/p99;
- pipelined: 20,000 changes with 64 in flight (Postgres: transactions of 64 rows one after
  another, the relay's group commit; NATS: 64 asynchronous publishes, then their acks),
  changes per second;
- propagation: from the append to a second connection receiving the change (Postgres: LISTEN
  and a NOTIFY sent in the appending transaction, the change in its payload; NATS: a
  subscription on the stream's subject), p50/p99;
- the servers' CPU per 10,000 pipelined changes (utime + stime of their processes).

Usage: python3 measure.py [--quick]   (needs: pip install nats-py "psycopg[binary]")
"""

import asyncio
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

import nats
import psycopg

QUICK = "--quick" in sys.argv
APPENDS = 500 if QUICK else 2000
PIPELINED = 5000 if QUICK else 20000
IN_FLIGHT = 64
PAYLOAD = os.urandom(200)
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def cpu_seconds(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total / TICKS


def children(pid):
    """`pid` and every process below it (the postmaster, its backends and workers)."""
    parents = {}
    for task in glob.glob("/proc/[0-9]*/stat"):
        try:
            with open(task) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            parents[int(task.split("/")[2])] = int(fields[1])
        except (FileNotFoundError, ProcessLookupError, ValueError):
            pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(c for c, parent in parents.items() if parent == p)
    return out


def start_postgres(tmp, sync_commit):
    bindir = sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1]
    data = os.path.join(tmp, "pg")
    # initdb refuses root: run the server as the `postgres` user then.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_user:
        shutil.chown(tmp, "postgres")
    subprocess.run(as_user + [f"{bindir}/initdb", "-D", data, "-U", "weft", "--auth=trust"],
                   check=True, stdout=subprocess.DEVNULL)
    port = free_port()
    proc = subprocess.Popen(
        as_user + [f"{bindir}/postgres", "-D", data, "-p", str(port), "-k", tmp,
                   "-c", "listen_addresses=127.0.0.1", "-c", f"synchronous_commit={sync_commit}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    dsn = f"host=127.0.0.1 port={port} user=weft dbname=postgres"
    for _ in range(200):
        try:
            psycopg.connect(dsn).close()
            break
        except psycopg.OperationalError:
            time.sleep(0.05)
    return proc, dsn


async def measure_postgres(dsn, pid):
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute("create table log (seq bigserial primary key, doc bytea not null, change bytea not null)")
    doc = os.urandom(16)
    lat = []
    for _ in range(APPENDS):
        t = time.perf_counter()
        await conn.execute("insert into log (doc, change) values (%s, %s)", (doc, PAYLOAD))
        lat.append(time.perf_counter() - t)
    procs = children(pid)
    cpu0 = cpu_seconds(procs)
    t = time.perf_counter()
    rows = [(doc, PAYLOAD)] * IN_FLIGHT
    for _ in range(PIPELINED // IN_FLIGHT):
        async with conn.transaction():
            async with conn.cursor() as cur:
                await cur.executemany("insert into log (doc, change) values (%s, %s)", rows)
    took = time.perf_counter() - t
    cpu = cpu_seconds(procs) - cpu0
    # Propagation: NOTIFY in the appending transaction, the change (hex) in its payload.
    listener = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await listener.execute("listen log")
    prop = []
    gen = listener.notifies()
    for _ in range(APPENDS // 2):
        t = time.perf_counter()
        async with conn.transaction():
            await conn.execute("insert into log (doc, change) values (%s, %s)", (doc, PAYLOAD))
            await conn.execute("select pg_notify('log', %s)", (PAYLOAD.hex(),))
        await gen.__anext__()
        prop.append(time.perf_counter() - t)
    await listener.close()
    await conn.close()
    return lat, PIPELINED // IN_FLIGHT * IN_FLIGHT / took, prop, cpu


async def measure_nats(url, pid):
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.add_stream(name="LOG", subjects=["log.>"], storage="file")
    subject = "log." + os.urandom(8).hex()
    lat = []
    for _ in range(APPENDS):
        t = time.perf_counter()
        await js.publish(subject, PAYLOAD)
        lat.append(time.perf_counter() - t)
    cpu0 = cpu_seconds([pid])
    t = time.perf_counter()
    sent = 0
    for _ in range(PIPELINED // IN_FLIGHT):
        acks = [await js.publish_async(subject, PAYLOAD) for _ in range(IN_FLIGHT)]
        await asyncio.gather(*acks)
        sent += IN_FLIGHT
    took = time.perf_counter() - t
    cpu = cpu_seconds([pid]) - cpu0
    sub_conn = await nats.connect(url)
    got = asyncio.Queue()

    async def on_msg(msg):
        await got.put(time.perf_counter())

    await sub_conn.subscribe(subject, cb=on_msg)
    await sub_conn.flush()
    prop = []
    for _ in range(APPENDS // 2):
        t = time.perf_counter()
        await js.publish(subject, PAYLOAD)
        arrived = await got.get()
        prop.append(max(arrived, time.perf_counter()) - t)
    await sub_conn.close()
    await nc.close()
    return lat, sent / took, prop, cpu


def report(name, lat, rate, prop, cpu):
    ms = lambda s: f"{s * 1e3:.2f} ms"
    print(f"{name:38} append p50 {ms(pct(lat, .5))} p99 {ms(pct(lat, .99))} | "
          f"pipelined {rate:,.0f}/s | propagation p50 {ms(pct(prop, .5))} p99 {ms(pct(prop, .99))} | "
          f"server CPU {cpu / (PIPELINED / 10000):.2f} s per 10k")


async def main():
    for sync_commit in ("on", "off"):
        with tempfile.TemporaryDirectory() as tmp:
            proc, dsn = start_postgres(tmp, sync_commit)
            try:
                report(f"postgres synchronous_commit={sync_commit}", *await measure_postgres(dsn, proc.pid))
            finally:
                proc.terminate()
                proc.wait()
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen([shutil.which("nats-server") or "/usr/sbin/nats-server", "-js", "-sd", tmp,
                                 "-a", "127.0.0.1", "-p", str(port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for _ in range(200):
                try:
                    socket.create_connection(("127.0.0.1", port)).close()
                    break
                except OSError:
                    time.sleep(0.05)
            report("nats-server 2.9 jetstream (file)", *await measure_nats(f"nats://127.0.0.1:{port}", proc.pid))
        finally:
            proc.terminate()
            proc.wait()


asyncio.run(main())

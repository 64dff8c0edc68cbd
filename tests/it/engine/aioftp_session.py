"""An aioftp session over FTPS, for tests/it/engine_transfers.rs.

Usage: aioftp_session.py explicit|implicit HOST PORT USER PASSWORD CAFILE NAME

aioftp completes the TLS handshake of a data connection as soon as it has
connected, before it sends the data command (asyncio's open_connection with
ssl= returns only after the handshake); a server that starts the handshake
only after the command waits for a ClientHello that already came, and the
transfer hangs. `explicit` upgrades with AUTH TLS (aioftp then sends PBSZ 0 and
PROT P); `implicit` speaks TLS from the first byte. The session uploads NAME,
lists it (MLSD), downloads it and compares, and prints "case ok".
"""
import asyncio
import ssl
import sys

import aioftp

TIMEOUT = 30


async def session(mode, host, port, user, password, cafile, name):
    context = ssl.create_default_context(cafile=cafile)
    implicit = mode == "implicit"
    client = aioftp.Client(
        ssl=context if implicit else None,
        socket_timeout=TIMEOUT,
        connection_timeout=TIMEOUT,
    )
    await client.connect(host, port)
    if not implicit:
        await client.upgrade_to_tls(context)
    control = client.stream.writer.transport.get_extra_info("ssl_object")
    print("control channel:", control.version())
    await client.login(user, password)
    data = bytes(range(256)) * 2000
    async with client.upload_stream(name) as stream:
        await stream.write(data)
    names = [str(path) for path, _info in await client.list()]
    assert name in names, f"MLSD lists {name}"
    received = b""
    async with client.download_stream(name) as stream:
        async for block in stream.iter_by_block():
            received += block
    assert received == data, f"downloaded {len(received)} bytes, uploaded {len(data)}"
    print("downloaded:", len(received))
    await client.quit()


def main():
    mode, host, port, user, password, cafile, name = sys.argv[1:8]
    if mode not in ("explicit", "implicit"):
        raise SystemExit(f"unknown mode {mode}")
    asyncio.run(asyncio.wait_for(session(mode, host, int(port), user, password, cafile, name), 4 * TIMEOUT))
    print("case ok")


main()

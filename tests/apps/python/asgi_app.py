"""An ASGI app that knows nothing of hotswap, for uvicorn, hypercorn and
gunicorn's UvicornWorker: it answers `generation=G worker=W` (from the
environment hotswap gives workers) and supports the lifespan protocol."""
import os

BODY = "generation={} worker={}\n".format(
    os.environ.get("HOTSWAP_GENERATION", "0"), os.environ.get("HOTSWAP_WORKER_ID", "0")
).encode()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": BODY})

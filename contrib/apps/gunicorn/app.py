"""A plain WSGI app, for gunicorn under hotswap:

    hotswap run -l 127.0.0.1:8080 --ready notify -w 1 -- gunicorn -w 2 app:app

gunicorn takes the socket from LISTEN_FDS itself and says READY=1 on the
NOTIFY_SOCKET hotswap gives it; on SIGTERM it drains gracefully.
"""
import os


def app(environ, start_response):
    body = f"generation={os.environ.get('HOTSWAP_GENERATION', '0')} worker={os.environ.get('HOTSWAP_WORKER_ID', '0')} pid={os.getpid()}\n".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]

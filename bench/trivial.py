"""The CPU floor: a trivial Starlette endpoint served by uvicorn as the shim is served.

Same server stack as ``tts-shim serve``: uvicorn with uvloop and httptools, one
process, Starlette routing. No access log (the floor is the least a request can
cost on this stack).

    python bench/trivial.py --port 9100
"""

from __future__ import annotations

import argparse

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ping(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


app = Starlette(routes=[Route("/ping", ping, methods=["GET"])])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        server_header=False,
    )


if __name__ == "__main__":
    main()

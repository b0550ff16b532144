"""The CPU floor: a trivial Starlette endpoint served by uvicorn as the shim is served.

Same server stack as ``tts-shim serve``: uvicorn with uvloop and httptools, one
process, Starlette routing. No access log (the floor is the least a request can
cost on this stack).

With ``--audio FILE`` it is also the cheapest OpenAI-compatible speech endpoint:
``POST /v1/audio/speech`` reads the request and answers with the file's bytes (the
peer proxy of ``bench/run.py --peer`` forwards to it).

    python bench/trivial.py --port 9100 [--audio speech.mp3]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def ping(request: Request) -> Response:
    return Response(b"ok", media_type="text/plain")


def app(audio: bytes = b"") -> Starlette:
    """The floor's app; with ``audio``, a speech route that answers with it."""

    async def speech(request: Request) -> Response:
        await request.body()
        return Response(audio, media_type="audio/mpeg")

    routes = [Route("/ping", ping, methods=["GET"])]
    if audio:
        routes.append(Route("/v1/audio/speech", speech, methods=["POST"]))
    return Starlette(routes=routes)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--audio", type=Path, help="serve POST /v1/audio/speech with this file")
    args = parser.parse_args()
    uvicorn.run(
        app(args.audio.read_bytes() if args.audio else b""),
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

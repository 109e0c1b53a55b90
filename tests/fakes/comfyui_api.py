"""A fake ComfyUI server: /upload/image, /prompt (validates an API-format graph: known node
classes, links to existing nodes, an uploaded LoadImage file), the /ws websocket with
progress / executing / execution_error events for the client, /history, /view, /interrupt.
It "runs" a graph by what it contains: inpaint paints the masked (transparent) pixels purple,
img2img inverts, ImagePadForOutpaint pads with grey, ImageUpscaleWithModel doubles the size."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PURPLE = (128, 0, 128)
KNOWN = {
    "CheckpointLoaderSimple",
    "LoadImage",
    "CLIPTextEncode",
    "VAEEncodeForInpaint",
    "VAEEncode",
    "KSampler",
    "VAEDecode",
    "SaveImage",
    "UpscaleModelLoader",
    "ImageUpscaleWithModel",
    "ImagePadForOutpaint",
}


class FakeComfyUI:
    def __init__(self, *, steps: int = 4, fail_node: str | None = None) -> None:
        self.steps, self.fail_node = steps, fail_node
        self.uploads: dict[str, bytes] = {}
        self.outputs: dict[str, bytes] = {}
        self.history: dict[str, Any] = {}
        self.sockets: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.graphs: list[dict[str, Any]] = []
        self.interrupted = False
        self.app = Starlette(
            routes=[
                Route("/upload/image", self.upload, methods=["POST"]),
                Route("/prompt", self.prompt, methods=["POST"]),
                Route("/history/{pid}", self.get_history, methods=["GET"]),
                Route("/view", self.view, methods=["GET"]),
                Route("/interrupt", self.interrupt, methods=["POST"]),
                WebSocketRoute("/ws", self.ws),
            ]
        )

    async def upload(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str):
            return JSONResponse({"error": "no image"}, status_code=400)
        self.uploads[image.filename or "upload.png"] = await image.read()
        return JSONResponse(
            {"name": image.filename, "subfolder": "", "type": form.get("type", "input")}
        )

    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        client = websocket.query_params.get("clientId", "")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sockets[client] = queue
        await websocket.send_json(
            {
                "type": "status",
                "data": {"status": {"exec_info": {"queue_remaining": 0}}, "sid": client},
            }
        )
        closed = asyncio.ensure_future(websocket.receive())  # completes when the client leaves
        try:
            while True:
                message = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({message, closed}, return_when=asyncio.FIRST_COMPLETED)
                if closed in done:
                    message.cancel()
                    break
                await websocket.send_json(message.result())
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            self.sockets.pop(client, None)

    async def prompt(self, request: Request) -> Response:
        body = await request.json()
        graph, client = body.get("prompt"), body.get("client_id", "")
        if not isinstance(graph, dict):
            return JSONResponse(
                {"error": {"type": "invalid_prompt", "message": "no prompt"}, "node_errors": {}},
                status_code=400,
            )
        errors: dict[str, Any] = {}
        for node_id, node in graph.items():
            if node.get("class_type") not in KNOWN:
                errors[node_id] = {
                    "errors": [{"message": f"unknown node {node.get('class_type')}"}]
                }
            for value in node.get("inputs", {}).values():
                if isinstance(value, list) and (len(value) != 2 or str(value[0]) not in graph):
                    errors[node_id] = {"errors": [{"message": f"bad link {value}"}]}
                if isinstance(value, str) and value.startswith("{{"):
                    errors[node_id] = {"errors": [{"message": f"unfilled placeholder {value}"}]}
            if (
                node.get("class_type") == "LoadImage"
                and node["inputs"].get("image") not in self.uploads
            ):
                errors[node_id] = {"errors": [{"message": "image not uploaded"}]}
        if errors:
            return JSONResponse(
                {
                    "error": {
                        "type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation",
                    },
                    "node_errors": errors,
                },
                status_code=400,
            )
        self.graphs.append(graph)
        pid = f"prompt-{len(self.graphs)}"
        asyncio.get_running_loop().create_task(self._execute(pid, client, graph))
        return JSONResponse({"prompt_id": pid, "number": len(self.graphs), "node_errors": {}})

    async def _execute(self, pid: str, client: str, graph: dict[str, Any]) -> None:
        queue = self.sockets.get(client)

        async def send(kind: str, data: dict[str, Any]) -> None:
            if queue is not None:
                await queue.put({"type": kind, "data": {**data, "prompt_id": pid}})

        await send("execution_start", {})
        self.interrupted = False
        for step in range(1, self.steps + 1):
            if self.interrupted:
                await send("execution_interrupted", {})
                return
            await asyncio.sleep(0.03)
            await send("progress", {"value": step, "max": self.steps})
        kinds = {node["class_type"]: node for node in graph.values()}
        if self.fail_node and self.fail_node in kinds:
            await send(
                "execution_error",
                {
                    "node_id": "6",
                    "node_type": self.fail_node,
                    "exception_message": "CUDA out of memory",
                },
            )
            return
        loaded = Image.open(
            io.BytesIO(self.uploads[kinds["LoadImage"]["inputs"]["image"]])
        ).convert("RGBA")
        rgba = np.asarray(loaded)
        rgb = rgba[:, :, :3].copy()
        if "ImagePadForOutpaint" in kinds:
            pad = kinds["ImagePadForOutpaint"]["inputs"]
            rgb = np.pad(
                rgb,
                ((pad["top"], pad["bottom"]), (pad["left"], pad["right"]), (0, 0)),
                constant_values=90,
            )
        elif "VAEEncodeForInpaint" in kinds:
            rgb[rgba[:, :, 3] == 0] = PURPLE
        elif "VAEEncode" in kinds:
            rgb = 255 - rgb
        if "ImageUpscaleWithModel" in kinds:
            rgb = rgb.repeat(2, axis=0).repeat(2, axis=1)
        buffer = io.BytesIO()
        Image.fromarray(rgb).save(buffer, "PNG")
        name = f"retouch_{pid}.png"
        self.outputs[name] = buffer.getvalue()
        save_id = next(k for k, v in graph.items() if v["class_type"] == "SaveImage")
        self.history[pid] = {
            "outputs": {
                save_id: {"images": [{"filename": name, "subfolder": "", "type": "output"}]}
            },
            "status": {"completed": True},
        }
        await send("executing", {"node": None})

    async def get_history(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        return JSONResponse({pid: self.history[pid]} if pid in self.history else {})

    async def view(self, request: Request) -> Response:
        name = request.query_params.get("filename", "")
        if name not in self.outputs or request.query_params.get("type") != "output":
            return JSONResponse({"error": "not found"}, status_code=404)
        return Response(self.outputs[name], media_type="image/png")

    async def interrupt(self, request: Request) -> Response:
        self.interrupted = True
        return JSONResponse({})

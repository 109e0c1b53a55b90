"""A fake ComfyUI server (HTTP and websocket, served live: the protocol needs a socket) that
behaves as ComfyUI does.

Rules (comfyanonymous/ComfyUI ``server.py``, ``main.py`` ``prompt_worker``, ``execution.py``,
``nodes.py``):
- ``POST /prompt {prompt, client_id, prompt_id?}`` validates the graph (known node classes,
  required inputs, links to existing outputs) and answers ``{prompt_id, number, node_errors}``
  or 400 ``{error, node_errors}``; a client-given ``prompt_id`` is kept.
- prompts run **one at a time, in queue order**; ``GET /queue`` lists ``queue_running`` and
  ``queue_pending`` items ``[number, prompt_id, prompt, extra_data, outputs]``;
  ``POST /queue {"delete": [id]}`` takes a pending one off.
- ``POST /interrupt``: with ``{"prompt_id"}`` it stops that prompt only if it is the one
  running; without a body it stops whatever runs.
- events on ``/ws?clientId=`` for the prompt's client: execution_start, executing {node},
  progress {value, max}, executed, **execution_success, then (after the history is saved by
  ``q.task_done``) executing {node: null}**; execution_error / execution_interrupted on
  failure. ``GET /history/{id}`` is ``{}`` until saved.
- ``GET /system_stats`` answers (what retouch probes for).

It "runs" a graph by what it contains: ``InpaintModelConditioning`` blends the masked pixels
toward purple by ``denoise``; ``VAEEncodeForInpaint`` first greys them (so below denoise 1 the
grey shows, as with an ordinary checkpoint); ImagePadForOutpaint pads grey (the new area is
then masked); VAEEncode (img2img) inverts; ImageUpscaleWithModel doubles the size.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

PURPLE = (128, 0, 128)
NODES: dict[str, tuple[tuple[str, ...], int]] = {
    # class: (required inputs, number of outputs), from nodes.py INPUT_TYPES / RETURN_TYPES
    "CheckpointLoaderSimple": (("ckpt_name",), 3),
    "LoadImage": (("image",), 2),
    "CLIPTextEncode": (("text", "clip"), 1),
    "InpaintModelConditioning": (("positive", "negative", "vae", "pixels", "mask"), 3),
    "VAEEncodeForInpaint": (("pixels", "vae", "mask", "grow_mask_by"), 1),
    "VAEEncode": (("pixels", "vae"), 1),
    "KSampler": (
        (
            "model",
            "seed",
            "steps",
            "cfg",
            "sampler_name",
            "scheduler",
            "positive",
            "negative",
            "latent_image",
            "denoise",
        ),
        1,
    ),
    "VAEDecode": (("samples", "vae"), 1),
    "SaveImage": (("images", "filename_prefix"), 0),
    "UpscaleModelLoader": (("model_name",), 1),
    "ImageUpscaleWithModel": (("upscale_model", "image"), 1),
    "ImagePadForOutpaint": (("image", "left", "top", "right", "bottom", "feathering"), 2),
}


def node_error(kind: str, message: str, details: str = "") -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": {}}


class FakeComfyUI:
    def __init__(
        self, *, steps: int = 4, step_s: float = 0.02, history_delay: float = 0.15
    ) -> None:
        self.steps, self.step_s, self.history_delay = steps, step_s, history_delay
        self.fail_node: str | None = None
        self.prompt_delay = 0.0
        """Seconds /prompt takes to answer after queueing (to play a slow server)."""
        self.prompt_failures = 0
        """/prompt answers this many 500s before it works."""
        self.uploads: dict[str, bytes] = {}
        self.outputs: dict[str, bytes] = {}
        self.history: dict[str, Any] = {}
        self.sockets: dict[str, asyncio.Queue[dict[str, Any]]] = {}
        self.graphs: dict[str, dict[str, Any]] = {}
        self.prompt_posts = 0
        self.pending: list[tuple[str, str, dict[str, Any]]] = []
        self.running: str | None = None
        self.interrupt_target: str | None = None
        self.interrupts: list[Any] = []
        self.deleted: list[str] = []
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.history_at_success: dict[str, bool] = {}
        self.number = 0
        self._wake: asyncio.Event | None = None
        self.app = Starlette(
            routes=[
                Route("/upload/image", self.upload, methods=["POST"]),
                Route("/prompt", self.prompt, methods=["POST"]),
                Route("/queue", self.get_queue, methods=["GET"]),
                Route("/queue", self.post_queue, methods=["POST"]),
                Route("/history/{pid}", self.get_history, methods=["GET"]),
                Route("/view", self.view, methods=["GET"]),
                Route("/interrupt", self.interrupt, methods=["POST"]),
                Route("/system_stats", self.system_stats, methods=["GET"]),
                WebSocketRoute("/ws", self.ws),
            ],
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Any) -> AsyncIterator[None]:
        self._wake = asyncio.Event()
        worker = asyncio.get_running_loop().create_task(self._worker())
        yield
        worker.cancel()

    # --- HTTP --------------------------------------------------------------------------

    async def upload(self, request: Request) -> Response:
        form = await request.form()
        image = form.get("image")
        if image is None or isinstance(image, str) or not image.filename:
            return Response(status_code=400)
        self.uploads[image.filename] = await image.read()
        return JSONResponse(
            {"name": image.filename, "subfolder": "", "type": form.get("type", "input")}
        )

    def _validate(self, graph: dict[str, Any]) -> dict[str, Any]:
        errors: dict[str, Any] = {}
        for node_id, node in graph.items():
            kind = node.get("class_type")
            found = []
            if kind not in NODES:
                found.append(
                    node_error(
                        "invalid_prompt", f"Cannot execute because node {kind} does not exist."
                    )
                )
            else:
                required, _ = NODES[kind]
                inputs = node.get("inputs", {})
                for name in required:
                    if name not in inputs:
                        found.append(
                            node_error("required_input_missing", "Required input is missing", name)
                        )
                for name, value in inputs.items():
                    if isinstance(value, list):
                        if len(value) != 2 or str(value[0]) not in graph:
                            found.append(node_error("bad_linked_input", "Bad linked input", name))
                            continue
                        source = graph[str(value[0])].get("class_type")
                        if source in NODES and not 0 <= int(value[1]) < NODES[source][1]:
                            found.append(node_error("bad_linked_input", "Bad output index", name))
                    elif isinstance(value, str) and value.startswith("{{"):
                        found.append(
                            node_error("value_not_valid", f"unfilled placeholder {value}", name)
                        )
                if kind == "LoadImage" and inputs.get("image") not in self.uploads:
                    found.append(
                        node_error(
                            "value_not_in_list",
                            "Value not in list",
                            f"image: {inputs.get('image')}",
                        )
                    )
            if found:
                errors[node_id] = {"errors": found, "dependent_outputs": [], "class_type": kind}
        return errors

    async def prompt(self, request: Request) -> Response:
        self.prompt_posts += 1
        if self.prompt_failures:
            self.prompt_failures -= 1
            return JSONResponse({"error": "internal error"}, status_code=500)
        body = await request.json()
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            error = node_error("no_prompt", "No prompt provided")
            return JSONResponse({"error": error, "node_errors": {}}, status_code=400)
        errors = self._validate(graph)
        if errors:
            error = node_error(
                "prompt_outputs_failed_validation", "Prompt outputs failed validation"
            )
            return JSONResponse({"error": error, "node_errors": errors}, status_code=400)
        pid = str(body.get("prompt_id") or uuid.uuid4())
        self.graphs[pid] = graph
        self.number += 1
        self.pending.append((pid, str(body.get("client_id", "")), graph))
        assert self._wake is not None
        self._wake.set()
        await self._status()
        if self.prompt_delay:
            await asyncio.sleep(self.prompt_delay)
        return JSONResponse({"prompt_id": pid, "number": self.number, "node_errors": {}})

    def _item(self, pid: str) -> list[Any]:
        return [self.number, pid, self.graphs[pid], {}, ["8"]]

    async def get_queue(self, request: Request) -> Response:
        running = [self._item(self.running)] if self.running else []
        return JSONResponse(
            {"queue_running": running, "queue_pending": [self._item(p) for p, _, _ in self.pending]}
        )

    async def post_queue(self, request: Request) -> Response:
        body = await request.json()
        for pid in body.get("delete", []):
            before = len(self.pending)
            self.pending = [item for item in self.pending if item[0] != pid]
            if len(self.pending) < before:
                self.deleted.append(pid)
        return Response(status_code=200)

    async def interrupt(self, request: Request) -> Response:
        raw = await request.body()
        target = None
        if raw:
            target = (await request.json()).get("prompt_id")
        self.interrupts.append(target)
        if target is None or target == self.running:
            self.interrupt_target = self.running
        return Response(status_code=200)

    async def get_history(self, request: Request) -> Response:
        pid = request.path_params["pid"]
        return JSONResponse({pid: self.history[pid]} if pid in self.history else {})

    async def view(self, request: Request) -> Response:
        name = request.query_params.get("filename", "")
        if name not in self.outputs or request.query_params.get("type") != "output":
            return Response(status_code=404)
        return Response(self.outputs[name], media_type="image/png")

    async def system_stats(self, request: Request) -> Response:
        return JSONResponse({"system": {"comfyui_version": "0.3.60"}, "devices": []})

    async def ws(self, websocket: WebSocket) -> None:
        await websocket.accept()
        client = websocket.query_params.get("clientId", "")
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.sockets[client] = queue
        await websocket.send_json(
            {
                "type": "status",
                "data": {
                    "status": {"exec_info": {"queue_remaining": len(self.pending)}},
                    "sid": client,
                },
            }
        )
        closed = asyncio.ensure_future(websocket.receive())
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

    # --- the worker (main.py prompt_worker) ---------------------------------------------

    async def _status(self) -> None:
        """server.py ``queue_updated``: the queue size, to every socket."""
        remaining = len(self.pending) + (1 if self.running else 0)
        for queue in list(self.sockets.values()):
            await queue.put(
                {
                    "type": "status",
                    "data": {"status": {"exec_info": {"queue_remaining": remaining}}},
                }
            )

    async def _send(self, client: str, pid: str, kind: str, data: dict[str, Any]) -> None:
        self.events.append((pid, kind, data))
        queue = self.sockets.get(client)
        if queue is not None:
            await queue.put({"type": kind, "data": {**data, "prompt_id": pid}})

    async def _worker(self) -> None:
        assert self._wake is not None
        while True:
            if not self.pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            pid, client, graph = self.pending.pop(0)
            self.running = pid
            await self._status()
            try:
                await self._execute(pid, client, graph)
            finally:
                self.running = None
                await self._status()

    async def _execute(self, pid: str, client: str, graph: dict[str, Any]) -> None:
        await self._send(client, pid, "execution_start", {})
        kinds = {node["class_type"]: (node_id, node) for node_id, node in graph.items()}
        sampler = kinds.get("KSampler", ("6", {}))[0]
        await self._send(client, pid, "executing", {"node": sampler})
        for step in range(1, self.steps + 1):
            if self.interrupt_target == pid:
                self.interrupt_target = None
                await self._send(client, pid, "execution_interrupted", {"node_id": sampler})
                self.history[pid] = {
                    "outputs": {},
                    "status": {
                        "status_str": "error",
                        "completed": False,
                        "messages": [["execution_interrupted", {}]],
                    },
                }
                await self._send(client, pid, "executing", {"node": None})
                return
            await asyncio.sleep(self.step_s)
            await self._send(
                client, pid, "progress", {"value": step, "max": self.steps, "node": sampler}
            )
        if self.fail_node and self.fail_node in kinds:
            detail = {
                "node_id": kinds[self.fail_node][0],
                "node_type": self.fail_node,
                "exception_message": "CUDA out of memory",
            }
            await self._send(client, pid, "execution_error", detail)
            self.history[pid] = {
                "outputs": {},
                "status": {
                    "status_str": "error",
                    "completed": False,
                    "messages": [["execution_error", detail]],
                },
            }
            await self._send(client, pid, "executing", {"node": None})
            return
        name = f"retouch_{pid}.png"
        self.outputs[name] = self._render(graph, kinds)
        save_id = kinds["SaveImage"][0]
        images = [{"filename": name, "subfolder": "", "type": "output"}]
        await self._send(client, pid, "executed", {"node": save_id, "output": {"images": images}})
        # execution.py sends execution_success from PromptExecutor.execute; main.py saves the
        # history afterwards (q.task_done) and only then sends executing {node: None}.
        await self._send(client, pid, "execution_success", {})
        self.history_at_success[pid] = pid in self.history
        await asyncio.sleep(self.history_delay)
        self.history[pid] = {
            "outputs": {save_id: {"images": images}},
            "status": {"status_str": "success", "completed": True, "messages": []},
        }
        await self._send(client, pid, "executing", {"node": None})

    def _render(self, graph: dict[str, Any], kinds: dict[str, tuple[str, dict[str, Any]]]) -> bytes:
        load = kinds["LoadImage"][1]["inputs"]["image"]
        rgba = np.asarray(Image.open(io.BytesIO(self.uploads[load])).convert("RGBA"))
        rgb = rgba[:, :, :3].astype(float)
        hole = (255 - rgba[:, :, 3]).astype(float) / 255.0  # LoadImage: mask = 1 - alpha
        denoise = float(
            kinds.get("KSampler", ("", {"inputs": {}}))[1]["inputs"].get("denoise", 1.0)
        )
        if "ImagePadForOutpaint" in kinds:
            pad = kinds["ImagePadForOutpaint"][1]["inputs"]
            rgb = np.pad(
                rgb,
                ((pad["top"], pad["bottom"]), (pad["left"], pad["right"]), (0, 0)),
                constant_values=128,
            )
            hole = np.pad(
                np.zeros(hole.shape),
                ((pad["top"], pad["bottom"]), (pad["left"], pad["right"])),
                constant_values=1.0,
            )
        if "VAEEncodeForInpaint" in kinds:
            rgb = np.where(hole[:, :, None] > 0.5, 128.0, rgb)  # the masked pixels greyed
        if "InpaintModelConditioning" in kinds or "VAEEncodeForInpaint" in kinds:
            weight = (hole * denoise)[:, :, None]
            rgb = rgb * (1 - weight) + np.array(PURPLE, float) * weight
        elif "VAEEncode" in kinds:
            rgb = 255 - rgb
        if "ImageUpscaleWithModel" in kinds:
            rgb = rgb.repeat(2, axis=0).repeat(2, axis=1)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(np.rint(rgb), 0, 255).astype(np.uint8)).save(buffer, "PNG")
        return buffer.getvalue()

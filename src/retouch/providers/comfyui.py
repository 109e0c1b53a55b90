"""A self-hosted ComfyUI server, driven with API-format workflow templates.

Shipped templates (``comfyui_workflows/``: inpaint, img2img, upscale, outpaint) hold
placeholders such as ``"{{prompt}}"`` or ``"{{seed}}"`` that are replaced by typed values; a
file of the same name in COMFYUI_WORKFLOWS (a folder) overrides a shipped one, and the option
``workflow`` names any other file. The image is uploaded with ``/upload/image`` as an RGBA PNG
whose alpha is 0 where to edit: ComfyUI's LoadImage gives ``mask = 1 - alpha``.

Contract (comfyanonymous/ComfyUI ``server.py``, ``main.py`` ``prompt_worker``,
``execution.py``, ``nodes.py``):

- The graph is queued with ``POST /prompt {prompt, client_id, prompt_id}`` (the server keeps
  a client-chosen ``prompt_id``), so after a read timeout retouch looks its own prompt up in
  ``GET /queue`` / ``/history`` instead of queueing it twice. A 400 carries ``node_errors``:
  they are shown, node by node.
- Done means ``executing {node: null, prompt_id}`` on the websocket ``/ws?clientId=``:
  ``execution_success`` is sent from ``PromptExecutor.execute`` *before* ``prompt_worker``
  saves the history (``q.task_done``), so the history is read after ``executing null``, and
  polled until it holds outputs. Without a websocket, ``/history/{prompt_id}`` is polled.
- A cancel stops **our prompt only**: ``POST /interrupt {"prompt_id"}`` when it is running
  (a bare ``/interrupt`` stops whoever's job runs), ``POST /queue {"delete": [id]}`` when it
  is still queued.
- Inpaint and outpaint use ``InpaintModelConditioning`` (``noise_mask`` on), which works with
  ordinary checkpoints at any denoise and with inpainting checkpoints (option
  ``inpaint_checkpoint`` names one to load instead). ``VAEEncodeForInpaint`` greys the masked
  pixels, so with an ordinary checkpoint below denoise 1 the grey shows.

Base URL: COMFYUI_BASE_URL, or STABLE_DIFFUSION_LOCAL_BASE_URL when it points at a ComfyUI
(probed: ``GET /system_stats``); default http://127.0.0.1:8188.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from retouch.compose import output_size, scaled_size
from retouch.errors import (
    Cancelled,
    InvalidRequest,
    ProviderTimeout,
    ServerError,
    UnsupportedOperation,
)
from retouch.remote import (
    LOCAL_SD_ENV,
    RemoteClient,
    decode_rgb,
    env,
    local_base_url,
    png_bytes,
    sized,
)
from retouch.results import ImageResult, OutputImage
from retouch.types import (
    EditRequest,
    InpaintRequest,
    OperationSpec,
    OutpaintRequest,
    Progress,
    ProgressCallback,
    ProviderInfo,
    ProviderStatus,
    Request,
    UpscaleRequest,
    parse_options,
)

NAME = "comfyui"
ENV = "COMFYUI_BASE_URL"
DEFAULT_BASE_URL = "http://127.0.0.1:8188"
PLACEHOLDER = re.compile(r"^\{\{(\w+)\}\}$")


@dataclass(frozen=True)
class ComfyUIOptions:
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    inpaint_checkpoint: str | None = None
    """An inpainting checkpoint to load for inpaint and outpaint instead of ``checkpoint``."""
    upscale_model: str = "RealESRGAN_x4plus.pth"
    workflow: str | None = None
    """A template name in COMFYUI_WORKFLOWS or a path to an API-format JSON file."""
    timeout: float = 600.0
    """Seconds the prompt may take, queue included; then it is cancelled."""
    http_timeout: float = 60.0
    """Seconds to wait for an HTTP answer (the server validates and queues, then answers)."""
    history_wait: float = 30.0
    """Seconds to wait for the history to hold the outputs once the prompt is done."""


def load_workflow(name: str) -> dict[str, Any]:
    """A template by name (user folder first, then shipped) or by path."""
    candidates = []
    if name.endswith(".json"):
        candidates.append(Path(name))
    else:
        folder = env("COMFYUI_WORKFLOWS")
        if folder:
            candidates.append(Path(folder) / f"{name}.json")
    for path in candidates:
        if path.is_file():
            return _parse(path.read_text("utf-8"), str(path))
    if name.endswith(".json"):
        raise InvalidRequest(f"{NAME}: no workflow file {name}")
    shipped = resources.files("retouch.providers").joinpath("comfyui_workflows", f"{name}.json")
    if not shipped.is_file():
        raise InvalidRequest(
            f"{NAME}: no workflow named {name!r} (shipped: inpaint, img2img, upscale, outpaint)"
        )
    return _parse(shipped.read_text("utf-8"), f"shipped {name}")


def _parse(text: str, source: str) -> dict[str, Any]:
    try:
        graph = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidRequest(f"{NAME}: {source} is not valid JSON ({exc})") from exc
    if not isinstance(graph, dict) or not all(
        isinstance(n, dict) and "class_type" in n for n in graph.values()
    ):
        raise InvalidRequest(
            f"{NAME}: {source} is not an API-format workflow (export it with 'Save (API Format)')"
        )
    return graph


def fill(graph: Any, values: dict[str, Any]) -> Any:
    """Replace every ``"{{name}}"`` string by ``values[name]``; an unknown name is an error."""
    if isinstance(graph, dict):
        return {k: fill(v, values) for k, v in graph.items()}
    if isinstance(graph, list):
        return [fill(v, values) for v in graph]
    if isinstance(graph, str):
        match = PLACEHOLDER.match(graph)
        if match:
            if match.group(1) not in values:
                raise InvalidRequest(
                    f"{NAME}: the workflow asks for {{{{{match.group(1)}}}}}, which retouch does not fill; "
                    f"known: {', '.join(sorted(values))}"
                )
            return values[match.group(1)]
    return graph


def node_errors(response: Any) -> str | None:
    """ComfyUI's ``node_errors`` of a refused prompt, node by node."""
    try:
        body = response.json()
    except ValueError:
        return None
    errors = body.get("node_errors") if isinstance(body, dict) else None
    return _describe_node_errors(errors) if errors else None


def _describe_node_errors(errors: Any) -> str:
    if not isinstance(errors, dict):
        return str(errors)[:500]
    lines = []
    for node_id, node in errors.items():
        kind = node.get("class_type", "?") if isinstance(node, dict) else "?"
        found = node.get("errors", []) if isinstance(node, dict) else []
        said = "; ".join(
            f"{e.get('message', '')}" + (f" ({e['details']})" if e.get("details") else "")
            for e in found
            if isinstance(e, dict)
        )
        lines.append(f"node {node_id} ({kind}): {said or node}")
    return "node errors: " + " | ".join(lines)


class ComfyUIProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="a self-hosted ComfyUI server with workflow templates (inpaint, img2img, "
        "upscale, outpaint)",
        operations={
            "inpaint": OperationSpec(
                min_side=64,
                working_size=1024,
                size_multiple=8,
                honours=frozenset(
                    {"prompt", "negative_prompt", "seed", "strength", "steps", "guidance"}
                ),
                options=ComfyUIOptions,
            ),
            "edit": OperationSpec(
                min_side=64,
                max_side=2048,
                size_multiple=8,
                honours=frozenset({"prompt", "negative_prompt", "seed", "strength"}),
                options=ComfyUIOptions,
            ),
            "outpaint": OperationSpec(
                min_side=64,
                max_side=2048,
                honours=frozenset({"prompt", "seed"}),
                options=ComfyUIOptions,
            ),
            "upscale": OperationSpec(min_side=8, options=ComfyUIOptions),
        },
        priority=-10,
    )

    def __init__(self, transport: Any = None) -> None:
        self.transport = transport

    def _base(self) -> str | None:
        return local_base_url(ENV, NAME, transport=self.transport)

    def status(self) -> ProviderStatus:
        base = self._base()
        if base is None:
            return ProviderStatus(
                False,
                f"set {ENV} (or {LOCAL_SD_ENV}) to your ComfyUI server (e.g. http://127.0.0.1:8188)",
            )
        return ProviderStatus(True, base)

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(ComfyUIOptions, request.options, provider=NAME)
        base = self._base() or DEFAULT_BASE_URL
        rgb = request.image.rgb8()
        height, width = rgb.shape[:2]
        size = (width, height)
        values: dict[str, Any] = {
            "checkpoint": options.checkpoint,
            "upscale_model": options.upscale_model,
            "prompt": "",
            "negative_prompt": "",
            "seed": 0,
            "steps": 25,
            "cfg": 7.0,
            "denoise": 1.0,
        }
        alpha = np.full(rgb.shape[:2], 255, np.uint8)
        if isinstance(request, InpaintRequest):
            template = "inpaint"
            alpha = (255 - request.mask.array).astype(np.uint8)  # LoadImage: mask = 1 - alpha
            values.update(
                checkpoint=options.inpaint_checkpoint or options.checkpoint,
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or "",
                denoise=request.strength,
                steps=request.steps or 25,
                cfg=request.guidance or 7.0,
            )
        elif isinstance(request, EditRequest):
            if request.mask is not None:
                raise UnsupportedOperation(f"{NAME}: edit with a mask is inpaint; use inpaint")
            template = "img2img"
            values.update(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or "",
                denoise=request.strength,
            )
            size = output_size(request)
        elif isinstance(request, OutpaintRequest):
            template = "outpaint"
            values.update(
                checkpoint=options.inpaint_checkpoint or options.checkpoint,
                prompt=request.prompt or "",
                left=request.left,
                right=request.right,
                top=request.top,
                bottom=request.bottom,
            )
            size = (width + request.left + request.right, height + request.top + request.bottom)
        elif isinstance(request, UpscaleRequest):
            template = "upscale"
            size = scaled_size(
                size, scale=request.scale, width=request.width, height=request.height
            )
        else:
            raise UnsupportedOperation(f"{NAME} does not do {request.operation}")
        seed = getattr(request, "seed", None)
        values["seed"] = (
            int(seed) if seed is not None else int(np.random.default_rng().integers(0, 2**32 - 1))
        )
        client = RemoteClient(
            NAME,
            base,
            transport=self.transport,
            explain=node_errors,
            timeout=options.http_timeout,
            still_running=f"the prompt may still be queued on {base}: see its queue",
        )
        upload = client.request(
            "POST",
            "/upload/image",
            files={
                "image": (
                    f"retouch-{uuid.uuid4().hex}.png",
                    png_bytes(np.dstack([rgb, alpha])),
                    "image/png",
                )
            },
            data={"type": "input", "overwrite": "true"},
            resend=True,  # an upload of a uniquely named file: safe to repeat
        ).json()
        values["image"] = (
            f"{upload['subfolder']}/{upload['name']}" if upload.get("subfolder") else upload["name"]
        )
        graph = fill(load_workflow(options.workflow or template), values)
        prompt_id = str(uuid.uuid4())
        history = self._run_prompt(client, base, graph, prompt_id, options, progress)
        files = [
            image
            for output in history.get("outputs", {}).values()
            for image in output.get("images", [])
        ]
        outputs = []
        for file in files:
            data = client.request(
                "GET",
                "/view",
                params={
                    "filename": file["filename"],
                    "subfolder": file.get("subfolder", ""),
                    "type": file.get("type", "output"),
                },
            ).content
            outputs.append(decode_rgb(data, provider=NAME)[:, :, :3])
        pixels, report = sized(outputs, size)
        return ImageResult(
            images=[OutputImage(pixels=p, seed=values["seed"]) for p in pixels],
            provider=NAME,
            model=values["checkpoint"] if template != "upscale" else options.upscale_model,
            usage={"output_size": report},
        )

    def _run_prompt(
        self,
        client: RemoteClient,
        base: str,
        graph: dict[str, Any],
        prompt_id: str,
        options: ComfyUIOptions,
        progress: ProgressCallback,
    ) -> dict[str, Any]:
        """Queue the graph once, follow it to the end, and return its history entry."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        client_id = uuid.uuid4().hex
        ws_url = (
            base.replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
            + f"/ws?clientId={client_id}"
        )
        with contextlib.ExitStack() as stack:
            socket: Any = None
            # Without a websocket (refused, proxied away) the history is polled instead.
            with contextlib.suppress(OSError, WebSocketException):
                socket = stack.enter_context(connect(ws_url, open_timeout=10))
            deadline = time.monotonic() + options.timeout
            self._queue(client, graph, prompt_id, client_id)
            try:
                self._follow(client, socket, prompt_id, deadline, options, progress)
            except Cancelled:
                self._cancel(client, prompt_id)
                raise
            return self._history(client, prompt_id, options)

    def _queue(
        self, client: RemoteClient, graph: dict[str, Any], prompt_id: str, client_id: str
    ) -> None:
        body = {"prompt": graph, "client_id": client_id, "prompt_id": prompt_id}
        try:
            queued = client.request("POST", "/prompt", json=body).json()
        except ProviderTimeout:
            # Sent but unanswered: it may be queued. Look for it rather than queue it twice.
            if self._where(client, prompt_id) is None:
                raise
            return
        except InvalidRequest as exc:
            raise InvalidRequest(f"{NAME}: ComfyUI rejected the workflow: {exc}") from exc
        if queued.get("node_errors"):
            # Queued with some outputs refused: take it back and say why.
            self._cancel(client, prompt_id)
            raise InvalidRequest(
                f"{NAME}: ComfyUI refused part of the workflow; "
                + _describe_node_errors(queued["node_errors"])
            )

    def _follow(
        self,
        client: RemoteClient,
        socket: Any,
        prompt_id: str,
        deadline: float,
        options: ComfyUIOptions,
        progress: ProgressCallback,
    ) -> None:
        """Until ``executing {node: null}`` for our prompt (or, without a socket, until its
        history is written)."""
        from websockets.exceptions import WebSocketException

        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._cancel(client, prompt_id)
                raise ProviderTimeout(
                    f"prompt {prompt_id} did not finish in {options.timeout:g} s; it was cancelled",
                    provider=NAME,
                )
            if socket is None:
                progress(Progress("comfyui", 0, 1))
                if self._finished(client, prompt_id):
                    return
                time.sleep(min(1.0, remaining))
                continue
            try:
                raw = socket.recv(timeout=min(5.0, remaining))
            except TimeoutError:
                if self._finished(client, prompt_id):  # a missed event: the history says
                    return
                continue
            except WebSocketException:
                socket = None  # the socket went away: poll the history instead
                continue
            if not isinstance(raw, str):
                continue  # binary preview frames
            message = json.loads(raw)
            kind, data = message.get("type"), message.get("data") or {}
            if kind == "status":
                progress(Progress("comfyui", 0, 1))  # the queue moved: a chance to cancel
                continue
            if data.get("prompt_id") != prompt_id:
                continue  # another prompt's events (the socket carries ours only, mostly)
            if kind == "progress":
                progress(
                    Progress("comfyui", int(data.get("value", 0)), int(data.get("max", 1)) or 1)
                )
            elif kind == "execution_error":
                raise ServerError(
                    f"node {data.get('node_id')} ({data.get('node_type')}) failed: "
                    f"{data.get('exception_message')}",
                    provider=NAME,
                )
            elif kind == "execution_interrupted":
                raise Cancelled(f"{NAME}: the prompt was interrupted on the server")
            elif kind == "executing" and data.get("node") is None:
                return  # the history is saved before this is sent

    def _finished(self, client: RemoteClient, prompt_id: str) -> bool:
        entry = self._entry(client, prompt_id)
        if entry is None:
            return False
        state = entry.get("status") or {}
        if state.get("status_str") == "error":
            said = [m for m in state.get("messages", []) if m and m[0] == "execution_error"]
            detail = said[-1][1] if said else {}
            raise ServerError(
                f"node {detail.get('node_id')} ({detail.get('node_type')}) failed: "
                f"{detail.get('exception_message', 'see the server log')}",
                provider=NAME,
            )
        return bool(entry.get("outputs"))

    @staticmethod
    def _entry(client: RemoteClient, prompt_id: str) -> dict[str, Any] | None:
        found = client.request("GET", f"/history/{prompt_id}").json()
        entry = found.get(prompt_id) if isinstance(found, dict) else None
        return entry if isinstance(entry, dict) else None

    def _history(
        self, client: RemoteClient, prompt_id: str, options: ComfyUIOptions
    ) -> dict[str, Any]:
        """The history entry once it holds outputs (polled briefly: it is written after the
        last node ran)."""
        deadline = time.monotonic() + options.history_wait
        while True:
            if self._finished(client, prompt_id):
                entry = self._entry(client, prompt_id)
                assert entry is not None
                if any(o.get("images") for o in entry.get("outputs", {}).values()):
                    return entry
                raise ServerError(
                    f"the workflow finished without saving an image (prompt {prompt_id}); "
                    "does it end in SaveImage?",
                    provider=NAME,
                )
            if time.monotonic() > deadline:
                raise ServerError(
                    f"prompt {prompt_id} finished but its history holds no outputs after "
                    f"{options.history_wait:g} s",
                    provider=NAME,
                )
            time.sleep(0.1)

    @staticmethod
    def _where(client: RemoteClient, prompt_id: str) -> str | None:
        """``running``, ``pending`` or ``done`` for our prompt; None when the server has none."""
        queue = client.request("GET", "/queue").json()
        for state in ("running", "pending"):
            if any(item[1] == prompt_id for item in queue.get(f"queue_{state}", [])):
                return state
        found = client.request("GET", f"/history/{prompt_id}").json()
        return "done" if isinstance(found, dict) and prompt_id in found else None

    def _cancel(self, client: RemoteClient, prompt_id: str) -> None:
        """Stop our prompt only: interrupt it if it runs, take it off the queue if it waits."""
        where = self._where(client, prompt_id)
        if where == "running":
            client.request("POST", "/interrupt", json={"prompt_id": prompt_id}, resend=True)
        elif where == "pending":
            client.request("POST", "/queue", json={"delete": [prompt_id]}, resend=True)

"""A self-hosted ComfyUI server, driven with API-format workflow templates.

Shipped templates (``comfyui_workflows/``: inpaint, img2img, upscale, outpaint) hold
placeholders such as ``"{{prompt}}"`` or ``"{{seed}}"`` that are replaced by typed values; a
file of the same name in COMFYUI_WORKFLOWS (a folder) overrides a shipped one, and the option
``workflow`` names any other file. The image is uploaded with ``/upload/image`` as an RGBA PNG
whose alpha is 0 where to edit: ComfyUI's LoadImage gives ``mask = 1 - alpha``. The graph is
queued with ``/prompt``; progress comes from the websocket ``/ws?clientId=``; results are read
from ``/history/{prompt_id}`` and downloaded from ``/view``. A cancel sends ``/interrupt``.
Base URL: COMFYUI_BASE_URL (default http://127.0.0.1:8188).
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from retouch.errors import (
    Cancelled,
    InvalidRequest,
    ProviderTimeout,
    ServerError,
    UnsupportedOperation,
)
from retouch.remote import RemoteClient, decode_rgb, env, fit, png_bytes
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
DEFAULT_BASE_URL = "http://127.0.0.1:8188"
PLACEHOLDER = re.compile(r"^\{\{(\w+)\}\}$")


@dataclass(frozen=True)
class ComfyUIOptions:
    checkpoint: str = "v1-5-pruned-emaonly.safetensors"
    upscale_model: str = "RealESRGAN_x4plus.pth"
    workflow: str | None = None
    """A template name in COMFYUI_WORKFLOWS or a path to an API-format JSON file."""
    timeout: float = 600.0


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


class ComfyUIProvider:
    info = ProviderInfo(
        name=NAME,
        kind="remote",
        description="a self-hosted ComfyUI server with workflow templates (inpaint, img2img, upscale, outpaint)",
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

    def _base(self) -> str:
        return env("COMFYUI_BASE_URL", DEFAULT_BASE_URL) or DEFAULT_BASE_URL

    def status(self) -> ProviderStatus:
        if env("COMFYUI_BASE_URL") is None:
            return ProviderStatus(
                False, "set COMFYUI_BASE_URL to your ComfyUI server (e.g. http://127.0.0.1:8188)"
            )
        return ProviderStatus(True, self._base())

    def run(self, request: Request, progress: ProgressCallback) -> ImageResult:
        options = parse_options(ComfyUIOptions, request.options, provider=NAME)
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
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or "",
                denoise=request.strength,
                steps=request.steps or 25,
                cfg=request.guidance or 7.0,
            )
        elif isinstance(request, EditRequest):
            template = "img2img"
            values.update(
                prompt=request.prompt,
                negative_prompt=request.negative_prompt or "",
                denoise=request.strength,
            )
        elif isinstance(request, OutpaintRequest):
            template = "outpaint"
            values.update(
                prompt=request.prompt or "",
                left=request.left,
                right=request.right,
                top=request.top,
                bottom=request.bottom,
            )
            size = (width + request.left + request.right, height + request.top + request.bottom)
        elif isinstance(request, UpscaleRequest):
            from retouch.compose import scaled_size

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
        client = RemoteClient(NAME, self._base(), transport=self.transport)
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
        ).json()
        values["image"] = (
            f"{upload['subfolder']}/{upload['name']}" if upload.get("subfolder") else upload["name"]
        )
        graph = fill(load_workflow(options.workflow or template), values)
        client_id = uuid.uuid4().hex
        prompt_id = self._queue(client, graph, client_id, options, progress)
        history = client.request("GET", f"/history/{prompt_id}").json().get(prompt_id, {})
        files = [
            image
            for output in history.get("outputs", {}).values()
            for image in output.get("images", [])
        ]
        if not files:
            raise ServerError(
                f"the workflow finished without saving an image (prompt {prompt_id}); does it end in SaveImage?",
                provider=NAME,
            )
        images = []
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
            images.append(
                OutputImage(
                    pixels=fit(decode_rgb(data, provider=NAME)[:, :, :3], size), seed=values["seed"]
                )
            )
        return ImageResult(
            images=images,
            provider=NAME,
            model=options.checkpoint if template != "upscale" else options.upscale_model,
        )

    def _queue(
        self,
        client: RemoteClient,
        graph: dict[str, Any],
        client_id: str,
        options: ComfyUIOptions,
        progress: ProgressCallback,
    ) -> str:
        """Queue the graph and follow it on the websocket until it finishes."""
        from websockets.exceptions import WebSocketException
        from websockets.sync.client import connect

        ws_url = (
            self._base().replace("http://", "ws://", 1).replace("https://", "wss://", 1).rstrip("/")
            + f"/ws?clientId={client_id}"
        )
        try:
            socket = connect(ws_url, open_timeout=10)
        except (OSError, WebSocketException) as exc:
            raise ServerError(f"cannot open the websocket {ws_url} ({exc})", provider=NAME) from exc
        with socket:
            try:
                queued = client.request(
                    "POST", "/prompt", json={"prompt": graph, "client_id": client_id}
                ).json()
            except InvalidRequest as exc:
                raise InvalidRequest(f"{NAME}: ComfyUI rejected the workflow: {exc}") from exc
            prompt_id = str(queued["prompt_id"])
            if queued.get("node_errors"):
                raise InvalidRequest(f"{NAME}: node errors: {queued['node_errors']}")
            while True:
                try:
                    raw = socket.recv(timeout=options.timeout)
                except TimeoutError as exc:
                    client.request("POST", "/interrupt")
                    raise ProviderTimeout(
                        f"no word from ComfyUI in {options.timeout:g} s; interrupted", provider=NAME
                    ) from exc
                except WebSocketException as exc:
                    raise ServerError(f"the websocket closed ({exc})", provider=NAME) from exc
                if not isinstance(raw, str):
                    continue  # binary preview frames
                message = json.loads(raw)
                kind, data = message.get("type"), message.get("data", {})
                if data.get("prompt_id") not in (None, prompt_id):
                    continue
                try:
                    if kind == "progress":
                        progress(
                            Progress(
                                "comfyui", int(data.get("value", 0)), int(data.get("max", 1)) or 1
                            )
                        )
                except Cancelled:
                    client.request("POST", "/interrupt")
                    raise
                if kind == "execution_error":
                    raise ServerError(
                        f"node {data.get('node_id')} ({data.get('node_type')}) failed: {data.get('exception_message')}",
                        provider=NAME,
                    )
                if kind == "execution_interrupted":
                    raise Cancelled(f"{NAME}: the prompt was interrupted on the server")
                if (
                    kind == "executing"
                    and data.get("node") is None
                    and data.get("prompt_id") == prompt_id
                ):
                    return prompt_id
                if kind == "execution_success":
                    return prompt_id

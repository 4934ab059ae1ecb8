"""Which outputs of a node the running workflow uses (ComfyUI has no API for it; its prompt tells).

The restore node keeps its ``face_crops`` output (every restored face at the model size, float32:
about 50 GB per 1000 frames at 2048 px) only when a node takes it. Two views of the workflow agree
on that here: ``execute`` reads the prompt it runs (hidden inputs), and ``fingerprint_inputs``
reads the prompt ComfyUI is running from its queue, so that connecting ``face_crops`` later
changes the node's cache key and it runs again instead of serving cached placeholder crops. When
either view cannot be read, the crops are kept (always correct, only bigger).

Nothing here imports ComfyUI at module level, so it is tested with plain dictionaries.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

logger = logging.getLogger(__name__)


def _nodes(prompt) -> list[tuple[str, Mapping]] | None:
    """(id, node) pairs of an API-format prompt dict or a ComfyUI ``DynamicPrompt``; None if neither."""
    if isinstance(prompt, Mapping):
        return [(str(k), v) for k, v in prompt.items() if isinstance(v, Mapping)]
    ids = getattr(prompt, "all_node_ids", None)
    get = getattr(prompt, "get_node", None)
    if ids is None or get is None:
        return None
    try:
        return [(str(k), get(k)) for k in ids()]
    except Exception as e:  # a DynamicPrompt of another ComfyUI version
        logger.debug("cannot read the workflow's nodes: %s", e)
        return None


def output_used(prompt, node_id, index: int) -> bool | None:
    """Whether any node of ``prompt`` takes output ``index`` of node ``node_id`` as an input.

    ``prompt``: API format (``{id: {"class_type": ..., "inputs": {name: value or [src_id, slot]}}}``)
    or a ``DynamicPrompt``. None when there is no prompt or ``node_id`` is not in it (cannot tell).
    """
    nodes = _nodes(prompt) if prompt is not None and node_id is not None else None
    if not nodes:
        return None
    node_id = str(node_id)
    if not any(k == node_id for k, _ in nodes):
        return None
    for _, node in nodes:
        inputs = node.get("inputs") if isinstance(node, Mapping) else None
        for value in (inputs or {}).values():
            if isinstance(value, (list, tuple)) and len(value) == 2 and str(value[0]) == node_id \
                    and isinstance(value[1], int) and value[1] == index:
                return True
    return False


def running_prompts() -> list:
    """The prompts (API format) ComfyUI is executing right now, read from its queue; [] when unknown."""
    try:
        import server  # ComfyUI's server module

        running, _ = server.PromptServer.instance.prompt_queue.get_current_queue()
        return [item[2] for item in running if len(item) > 2 and isinstance(item[2], Mapping)]
    except Exception as e:  # not inside ComfyUI, or another queue layout
        logger.debug("cannot read ComfyUI's running prompt: %s", e)
        return []


def used_in_running_prompt(node_id, class_type: str, index: int) -> bool | None:
    """:func:`output_used` for node ``node_id`` (of ``class_type``) in the prompt ComfyUI runs now;
    None when no running prompt holds that node, or several disagree."""
    answers = set()
    for prompt in running_prompts():
        node = prompt.get(str(node_id)) if node_id is not None else None
        if isinstance(node, Mapping) and node.get("class_type") == class_type:
            answers.add(output_used(prompt, node_id, index))
    return answers.pop() if len(answers) == 1 else None


def output_wanted(hidden, index: int, fingerprinted: Mapping[str, bool | None]) -> bool:
    """Whether a node must produce output ``index``: False only when both the prompt it executes
    (``hidden``: ComfyUI's hidden inputs, with ``unique_id`` and ``dynprompt`` or ``prompt``) and what
    its fingerprint saw (``fingerprinted[node id]``, from :func:`used_in_running_prompt`) say that
    no node takes it. Then a cached result without it can never reach a node that takes it: taking
    it changes the fingerprint, and the node runs again."""
    uid = getattr(hidden, "unique_id", None)
    prompt = getattr(hidden, "dynprompt", None) or getattr(hidden, "prompt", None)
    return not (output_used(prompt, uid, index) is False and fingerprinted.get(str(uid)) is False)

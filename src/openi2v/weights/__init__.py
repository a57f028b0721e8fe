"""A preset's weights: what to pull from the Hugging Face Hub, pulling it, and what is on disk.

``plan`` reads the repo's file listing and its ``model_index.json`` and keeps what the pipeline
loads: model_index.json and the component folders it names, safetensors over pickles, plain files
over variants; never the root's original-format checkpoints. The preset's LoRAs come from their
own repos. ``pull`` checks the disk has room, downloads each file with huggingface_hub's own
client (``get_hf_file_metadata`` for its redirects and ETag, ``http_get`` for the bytes and its
Range retries; it reads HF_TOKEN, HF_ENDPOINT and HF_HUB_OFFLINE), checks it against the listing's
size and hash, and records it in a manifest (``.openi2v/manifest.json`` in the directory) so that a
re-pull hashes nothing unchanged and ``status`` answers offline. Every failure is a ``PullError``
of one line: huggingface_hub's exceptions are translated in ``hub.py``, nowhere else. The modules:
``plan.py`` (what to fetch), ``pull.py`` (fetching it), ``status.py`` (what is on disk, and the manifest).

A file grows in ``.openi2v/partial/<path>/<its listed hash>`` and moves into place when whole, so
a pull interrupted in any way (a dropped connection, Ctrl-C, a killed process) resumes where it
stopped, in the run or the next one; a partial of another revision is deleted. A Xet-backed file
(when hf_xet is installed) is left to ``hf_hub_download``, whose temporary file is its own: it
starts again when interrupted; those temporary files, which no run reuses, are deleted when a pull
starts. model_index.json goes in last, so a directory left half-pulled is never taken for a
loadable pipeline (``registry.local_weights`` looks for it).
"""

from openi2v.weights.hub import INDEX, PullError
from openi2v.weights.plan import Plan, Remote, plan, size_text
from openi2v.weights.pull import pull, to_fetch
from openi2v.weights.status import State, WeightsStatus, status

__all__ = ["INDEX", "Plan", "PullError", "Remote", "State", "WeightsStatus", "plan", "pull", "size_text", "status", "to_fetch"]

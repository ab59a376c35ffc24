"""Where weights come from: what ``weights=`` means, verified downloads, the Hugging Face Hub.

* :mod:`wszoo.hub.weights`: ``None``, ``"DEFAULT"``, a file or ``"hf-hub:..."`` to a state dict;
* :mod:`wszoo.hub.download`: mirrored, resumable, sha256-verified downloads into the cache;
* :mod:`wszoo.hub.hf_load` / :mod:`wszoo.hub.hf_publish`: loading from and publishing to the Hub.
"""

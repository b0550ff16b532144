"""The AI/ML API side of the shim: the billed generation call, its replies, the CDN
download, the audio stream and the retry policy, one module each; :class:`Upstream`
puts them together."""

from shim.upstream.api import Upstream
from shim.upstream.replies import AudioRef
from shim.upstream.stream import AudioStream, UpstreamStats

__all__ = ["AudioRef", "AudioStream", "Upstream", "UpstreamStats"]

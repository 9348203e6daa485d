"""Teacher-latent caches: built once with a frozen teacher, then read by stage 2 instead of
running it.

- :mod:`salt.cache.store`  - where caches live, the index and shard formats, reads, atomic
  shard writes, verification;
- :mod:`salt.cache.legacy` - the older ``<split>/<video_id>.pt`` layout, read or imported;
- :mod:`salt.cache.build`  - running a teacher over a data source into a store (imported
  on its own: it sits above the data layer it reads from).
"""

from salt.cache.legacy import LegacyCache, LegacySplit, import_legacy, open_cache
from salt.cache.store import (
    DTYPES,
    INDEX,
    CacheIndex,
    CacheSplit,
    LatentCache,
    MissingSplitError,
    ShardRecord,
    cache_home,
    list_caches,
    resolve_cache,
    verify_cache,
)

__all__ = [
    "DTYPES",
    "INDEX",
    "CacheIndex",
    "CacheSplit",
    "LatentCache",
    "LegacyCache",
    "LegacySplit",
    "MissingSplitError",
    "ShardRecord",
    "cache_home",
    "import_legacy",
    "list_caches",
    "open_cache",
    "resolve_cache",
    "verify_cache",
]

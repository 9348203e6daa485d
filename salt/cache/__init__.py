"""Teacher-latent caches: built once with a frozen teacher, then read by stage 2 instead of
running it. Each module does one job:

- :mod:`salt.cache.index`  - where caches live, the index (``cache.json``) and shard records
  (``shard_NNNNN.json``): their schema, reading them, the cache's errors;
- :mod:`salt.cache.shards` - shard files: names, atomic writes, each row's CRC-32, the int8
  encoding;
- :mod:`salt.cache.store`  - reading a built cache: splits, views and memory-mapped latents;
- :mod:`salt.cache.verify` - what is wrong with a cache: structure, checksums, unfinished
  builds;
- :mod:`salt.cache.legacy` - every older layout (the first ``index.json``, and
  ``<split>/<video_id>.pt``), read or imported, and :func:`open_cache` for any layout;
- :mod:`salt.cache.build`  - running a teacher over a data source into a store (imported
  on its own: it sits above the data layer it reads from).
"""

from salt.cache.index import (
    DTYPES,
    INDEX,
    CacheError,
    CacheIndex,
    IncompleteCacheError,
    MissingSplitError,
    ShardRecord,
    cache_home,
    new_index,
    resolve_cache,
)
from salt.cache.legacy import LegacyCache, LegacySplit, import_legacy, list_caches, open_cache
from salt.cache.shards import encode_latents, write_shard
from salt.cache.store import CacheSplit, LatentCache, quantization_error
from salt.cache.verify import check_readable, verify_cache

__all__ = [
    "DTYPES",
    "INDEX",
    "CacheError",
    "CacheIndex",
    "CacheSplit",
    "IncompleteCacheError",
    "LatentCache",
    "LegacyCache",
    "LegacySplit",
    "MissingSplitError",
    "ShardRecord",
    "cache_home",
    "check_readable",
    "encode_latents",
    "import_legacy",
    "list_caches",
    "new_index",
    "open_cache",
    "quantization_error",
    "resolve_cache",
    "verify_cache",
    "write_shard",
]

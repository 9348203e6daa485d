"""Run by torchrun in test_cache.py: ``salt cache build`` on every rank. With DIE_ON_RANK=r,
rank r exits abruptly (no cleanup, as a kill would) right after writing its first shard."""

import os
import sys

import salt.cache.build as cache_build
from salt.cli import main

if os.environ.get("DIE_ON_RANK") == os.environ.get("RANK"):
    write_shard = cache_build.write_shard

    def write_then_die(*args, **kwargs):
        write_shard(*args, **kwargs)
        os._exit(3)

    cache_build.write_shard = write_then_die

sys.exit(main(sys.argv[1:]))

"""The /proc directory of one machine: each file's name and the renderer that writes it."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .buddyinfo import render_buddyinfo, render_pagetypeinfo
from .config import ProcConfig
from .meminfo import MeminfoSources, meminfo_sources, render_meminfo
from .slabinfo import SlabInfoRow, render_slabinfo
from .vmallocinfo import VmallocInfoRow, render_vmallocinfo
from .zoneinfo import render_zoneinfo

if TYPE_CHECKING:
    from ..buddy import BuddyAllocator
    from ..layout import Layout

Renderer = Callable[[], str]


class Proc:
    """The /proc files of one machine: a name for each renderer, read on demand.

    Args:
        files: file name (as under /proc, ``"meminfo"``) to a function that renders it now.

    Example:
        >>> proc = Proc({"version": lambda: "Linux version 6.8.0-hwsim\\n"})
        >>> proc.read("version")
        'Linux version 6.8.0-hwsim\\n'
        >>> proc.read("/proc/version") == proc.read("version")
        True
    """

    def __init__(self, files: Mapping[str, Renderer] | None = None) -> None:
        self._files: dict[str, Renderer] = {}
        for name, render in (files or {}).items():
            self.register(name, render)

    @classmethod
    def for_buddy(
        cls,
        buddy: BuddyAllocator,
        config: ProcConfig | None = None,
        *,
        slabinfo: Callable[[], Iterable[SlabInfoRow]] | None = None,
        vmallocinfo: Callable[[], Iterable[VmallocInfoRow]] | None = None,
        meminfo: Callable[[], MeminfoSources] | None = None,
        layout: Layout | None = None,
        node_stats: Callable[[], Mapping[str, int]] | None = None,
    ) -> Proc:
        """The files of a machine with this page allocator.

        buddyinfo, pagetypeinfo and zoneinfo come from ``buddy``. meminfo comes from
        ``meminfo`` if given, else from the allocator alone (:func:`meminfo_sources`).
        slabinfo and vmallocinfo exist only when their sources are given, each a function
        returning the rows at the time of the read; ``node_stats`` gives zoneinfo's per-node
        counters (slab and page-table pages, as meminfo counts them).
        """
        config = config or ProcConfig.for_arch(buddy.arch)
        cfg = config
        files: dict[str, Renderer] = {
            "buddyinfo": lambda: render_buddyinfo(buddy.zones),
            "pagetypeinfo": lambda: render_pagetypeinfo(buddy, cfg),
            "zoneinfo": lambda: render_zoneinfo(
                buddy, cfg, node_stats=None if node_stats is None else node_stats()
            ),
        }
        source = meminfo or (lambda: meminfo_sources(buddy, cfg, layout=layout))
        files["meminfo"] = lambda: render_meminfo(source(), cfg)
        if slabinfo is not None:
            slab_rows = slabinfo
            files["slabinfo"] = lambda: render_slabinfo(slab_rows())
        if vmallocinfo is not None:
            vm_rows = vmallocinfo
            files["vmallocinfo"] = lambda: render_vmallocinfo(vm_rows(), cfg)
        return cls(files)

    def register(self, name: str, render: Renderer) -> None:
        """Add (or replace) the file ``name``, rendered by calling ``render()``."""
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"a /proc file name is one path component, got {name!r}")
        self._files[name] = render

    def names(self) -> list[str]:
        """The files there are, sorted as ``ls /proc`` would list them."""
        return sorted(self._files)

    def read(self, name: str) -> str:
        """The text of ``/proc/<name>`` now (``"meminfo"`` or ``"/proc/meminfo"``).

        Raises:
            FileNotFoundError: there is no such file (yet) on this machine.
        """
        key = name.removeprefix("/proc/")
        render = self._files.get(key)
        if render is None:
            raise FileNotFoundError(f"/proc/{key}: No such file or directory")
        return render()

    def dump(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write every file into ``directory`` (created if missing); return the paths."""
        root = Path(directory)
        root.mkdir(parents=True, exist_ok=True)
        paths = []
        for name in self.names():
            path = root / name
            path.write_bytes(self.read(name).encode())
            paths.append(path)
        return paths

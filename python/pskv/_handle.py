"""A C handle the caller owns (an iterator, an export, a ring): freed by
close(), at the end of a `with` block, or at garbage collection."""


class Owned:
    _h = None
    #: The C function that frees the handle; set by each subclass.
    _free = None

    def close(self) -> None:
        h, self._h = self._h, None
        if h is not None:
            type(self)._free(h)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

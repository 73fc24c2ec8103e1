"""A C handle the caller owns (an iterator, an export, a ring): freed by
close(), at the end of a `with` block, or at garbage collection. Such an
object cannot be copied or pickled: a copy would share the C handle and
free it twice."""


def refuse_copies(cls):
    """Make copy.copy, copy.deepcopy and pickle raise TypeError for cls."""
    def refuse(self, *args):
        raise TypeError(f"a pskv.{type(self).__name__} holds a C handle: it cannot be copied "
                        f"or pickled (share it, or open another)")
    cls.__copy__ = cls.__deepcopy__ = cls.__reduce_ex__ = refuse
    return cls


@refuse_copies
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

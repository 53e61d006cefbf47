"""Backend errors -> shim errors, in one place.

Rules: runtime/ raises its own domain errors (runtime.errors) and knows nothing of ttrpc; this table
gives each the code containerd's errdefs expect. Messages are kept as the backend wrote them (they
carry the runtime's own words, e.g. "OCI runtime create failed: ...").
"""
from __future__ import annotations

from runtime import errors as rt
from shim import errors as se
from shim.runc.task.states import PROCESS_FINISHED


def backend_error(e: rt.BackendError) -> se.StatusError:
    if isinstance(e, rt.ProcessFinished):
        return se.NotFound(PROCESS_FINISHED)
    if isinstance(e, rt.ContainerNotFound):
        return se.NotFound(str(e) or "no such container")
    if isinstance(e, rt.AlreadyExists):
        return se.AlreadyExists(str(e))
    if isinstance(e, rt.Unsupported):
        return se.Unimplemented(str(e))
    if isinstance(e, rt.CallTimedOut):
        return se.DeadlineExceeded(str(e))
    return se.Unknown(str(e))

"""EC2 and Service Quotas errors → the taxonomy of providers/base.py, by the SDK's codes only; the retry waits.

- botocore `ClientError`: by its `Error.Code`, else by its HTTP status (a 5xx without a
  known code is transient, a 4xx is a bad request).
- botocore's connection and timeout exceptions (the request never got an answer) are
  `TransientError`; its credential exceptions are `AuthError`; its parameter, region and
  endpoint validation are `InvalidRequest` (a config problem).
- Anything else is not an SDK answer but a bug or an unexpected condition here: `classify`
  returns None and the caller lets it propagate unchanged, with its own traceback.
"""

from __future__ import annotations

from collections.abc import Mapping

from botocore.exceptions import (
    ClientError,
    CredentialRetrievalError,
    HTTPClientError,
    InvalidRegionError,
    NoAuthTokenError,
    NoCredentialsError,
    NoRegionError,
    ParamValidationError,
    PartialCredentialsError,
    ProfileNotFound,
    SSOError,
    TokenRetrievalError,
    UnknownEndpointError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)
from tenacity import RetryCallState

from providers.base import (
    AuthError,
    CapacityError,
    InvalidRequest,
    ProviderError,
    QuotaExceeded,
    RateLimited,
    TransientError,
)

RETRY_ATTEMPTS = 4  # 1 call + 3 retries, waits 1 s, 2 s, 4 s: bounded at 7 s of backoff
RETRY_MAX_WAIT_S = 20.0

CAPACITY_CODES = frozenset({
    "InsufficientInstanceCapacity", "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity",
    "Unsupported", "MaxSpotInstanceCountExceeded", "SpotMaxPriceTooLow", "UnfulfillableCapacity",
    "InsufficientCapacity",
})
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "InstanceLimitExceeded"})
THROTTLE_CODES = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "ThrottledException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "SlowDown", "EC2ThrottledException",
    "PriorRequestNotComplete",
})
AUTH_CODES = frozenset({
    "AuthFailure", "UnauthorizedOperation", "InvalidClientTokenId", "ExpiredToken", "ExpiredTokenException",
    "RequestExpired", "AccessDenied", "AccessDeniedException", "SignatureDoesNotMatch",
    "IncompleteSignature", "MissingAuthenticationToken", "UnrecognizedClientException",
    "InvalidAccessKeyId", "OptInRequired", "Blocked",
})
TRANSIENT_CODES = frozenset({"InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable"})
# The codes that say an instance id is unknown: for destroy and tagging, that instance is gone.
GONE_CODES = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})

ERROR_BY_CODE: Mapping[str, type[ProviderError]] = {
    **{code: CapacityError for code in CAPACITY_CODES},
    **{code: QuotaExceeded for code in QUOTA_CODES},
    **{code: RateLimited for code in THROTTLE_CODES},
    **{code: AuthError for code in AUTH_CODES},
    **{code: TransientError for code in TRANSIENT_CODES},
}
ERROR_BY_STATUS: Mapping[int, type[ProviderError]] = {401: AuthError, 403: AuthError, 429: RateLimited}
# botocore's own exceptions, by class (checked in order)
ERROR_BY_SDK_CLASS: tuple[tuple[tuple[type[Exception], ...], type[ProviderError]], ...] = (
    ((NoCredentialsError, PartialCredentialsError, CredentialRetrievalError, NoAuthTokenError,
      TokenRetrievalError, SSOError, ProfileNotFound), AuthError),
    ((BotoConnectionError, HTTPClientError), TransientError),  # refused, closed, timed out, proxy, TLS
    ((ParamValidationError, NoRegionError, InvalidRegionError, UnknownEndpointError), InvalidRequest),
)


def error_code(err: ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


def error_message(err: BaseException) -> str:
    """The SDK's message behind a classified error ("" when it has none)."""
    cause = err.__cause__
    return str(cause.response.get("Error", {}).get("Message", "")) if isinstance(cause, ClientError) else ""


def _status(err: ClientError) -> int:
    return int(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)


def classify(err: Exception, doing: str) -> ProviderError | None:
    """One SDK error → the taxonomy; `doing` names the operation.  None: not an SDK error."""
    if isinstance(err, ProviderError):
        return err
    if isinstance(err, ClientError):
        return _from_client_error(err, doing)
    for classes, kind in ERROR_BY_SDK_CLASS:
        if isinstance(err, classes):
            return _from_sdk_class(err, kind, doing)
    return None


def _from_client_error(err: ClientError, doing: str) -> ProviderError:
    code, status = error_code(err), _status(err)
    message = str(err.response.get("Error", {}).get("Message", ""))[:300]
    kind = ERROR_BY_CODE.get(code) or ERROR_BY_STATUS.get(status)
    if kind is None:
        kind = TransientError if status >= 500 else InvalidRequest
    label = code or str(status)
    if kind is AuthError:
        return AuthError(f"{doing}: AWS refused the credentials or permissions ({label}); "
                         f"check the credential chain and the IAM policy: {message}", code=label)
    return kind(f"{doing}: {label}: {message}", code=label)


def _from_sdk_class(err: Exception, kind: type[ProviderError], doing: str) -> ProviderError:
    name = type(err).__name__
    if kind is AuthError:
        return AuthError(f"{doing}: no usable AWS credentials (the standard chain: environment, "
                         f"profile, instance role): {name}", code=name)
    if kind is InvalidRequest:
        return InvalidRequest(f"{doing}: invalid request: {err}", code=name)
    return kind(f"{doing}: {name}: {err}", code=name)


def backoff(state: RetryCallState) -> float:
    """The wait before retry n: the error's own hint (retry_after_s), else 1 s, 2 s, 4 s..."""
    err = state.outcome.exception() if state.outcome else None
    hinted = getattr(err, "retry_after_s", None)
    if hinted:
        return min(float(hinted), RETRY_MAX_WAIT_S)
    return min(2.0 ** (state.attempt_number - 1), RETRY_MAX_WAIT_S)

"""Organizations (tenants) and their API keys."""

from __future__ import annotations

import secrets
import unicodedata
from typing import Any

import jwt
import sqlalchemy as sa
from sqlmodel import Session, select

from hub.config import Settings
from hub.crypto import hash_token
from hub.models import ApiKey, Organization, utcnow
from hub.types import HubError, ValidationFailed

KEY_PREFIX = "hub_"


class Unauthorized(HubError):
    code = "unauthorized"
    status = 401


def _unprintable(ch: str) -> bool:
    """A control or format character (a NUL, which PostgreSQL refuses; a
    right-to-left override), or half of a surrogate pair, which no database
    driver can encode."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Cs")


def create_organization(session: Session, name: str) -> tuple[Organization, str]:
    """Create an organization and its first API key; the key is returned once.

    :raises ValidationFailed: a name empty, longer than 200 characters, or
        holding control characters.
    """
    name = name.strip()
    if not name or len(name) > 200 or any(map(_unprintable, name)):
        raise ValidationFailed("an organization's name is 1 to 200 printable characters", code="invalid_name")
    org = Organization(name=name)
    session.add(org)
    session.flush()
    key = create_api_key(session, org.id)
    session.commit()
    return org, key


def create_api_key(session: Session, organization_id: str) -> str:
    token = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(ApiKey(organization_id=organization_id, prefix=token[:10], key_hash=hash_token(token)))
    return token


def authenticate(session: Session, settings: Settings, authorization: str | None,
                 jwks_client: jwt.PyJWKClient | None = None) -> Organization:
    """The organization a ``Bearer`` API key or JWT belongs to.

    :raises Unauthorized: missing, unknown, revoked or invalid credentials.
    """
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("send an API key as 'Authorization: Bearer <key>'", code="missing_credentials")
    token = authorization[7:].strip()
    if token.startswith(KEY_PREFIX):
        org = session.exec(
            select(Organization).join(ApiKey, ApiKey.organization_id == Organization.id)
            .where(ApiKey.key_hash == hash_token(token), ApiKey.revoked_at.is_(None))
        ).first()
        if org is None:
            raise Unauthorized("unknown or revoked API key", code="invalid_api_key")
        return org
    if token.count(".") == 2 and (settings.jwt_secret or settings.jwt_jwks_url):
        return _organization_from_jwt(session, settings, token, jwks_client)
    raise Unauthorized("unknown or revoked API key", code="invalid_api_key")


def _printable_name(claimed: Any, org_id: str) -> str:
    """The token's ``org_name`` as a name :func:`create_organization` would
    take: its unprintable characters dropped, cut to 200; else the id."""
    name = "".join(ch for ch in str(claimed or "") if not _unprintable(ch))
    return name.strip()[:200].strip() or org_id


def _organization_from_jwt(session: Session, settings: Settings, token: str,
                           jwks_client: jwt.PyJWKClient | None) -> Organization:
    # The audience is checked even when none is configured: a token addressed to another API of
    # a shared identity provider (it names an audience) is refused; one naming none passes.
    options = {"require": ["exp"]}
    try:
        if settings.jwt_secret:
            claims = jwt.decode(token, settings.jwt_secret, algorithms=["HS256"],
                                audience=settings.jwt_audience, issuer=settings.jwt_issuer, options=options)
        else:
            client = jwks_client or jwt.PyJWKClient(settings.jwt_jwks_url)  # type: ignore[arg-type]
            signing_key = client.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, signing_key.key, algorithms=["RS256", "ES256"],
                                audience=settings.jwt_audience, issuer=settings.jwt_issuer, options=options)
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"invalid token: {exc}", code="invalid_token") from None
    org_id = claims.get(settings.jwt_org_claim)
    # (bool is an int: {"org": true} made every such token one tenant named "True".)
    if not isinstance(org_id, (str, int)) or isinstance(org_id, bool) or not str(org_id).strip():
        raise Unauthorized(f"token has no {settings.jwt_org_claim!r} claim", code="invalid_token")
    org_id = str(org_id)
    if not org_id.isprintable():
        raise Unauthorized(f"the token's {settings.jwt_org_claim!r} claim holds control characters",
                           code="invalid_token")
    if len(org_id) > 64:
        # Cut to fit, two organizations sharing 64 first characters would be one tenant.
        raise Unauthorized(f"the token's {settings.jwt_org_claim!r} claim is longer than 64 characters",
                           code="invalid_token")
    org = session.get(Organization, org_id)
    if org is None:
        # The calling app vouches for its organizations: adopt them on first sight.
        org = Organization(id=org_id, name=_printable_name(claims.get("org_name"), org_id), created_at=utcnow())
        session.add(org)
        try:
            session.commit()
        except sa.exc.IntegrityError:
            # Another request (or hub process) adopted it at the same moment.
            session.rollback()
            org = session.get(Organization, org_id)
            if org is None:
                raise
    return org

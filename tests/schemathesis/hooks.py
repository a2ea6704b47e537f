"""Schemathesis hooks for the auth server: every token comes from a fresh administrator.

The fuzzing revokes its own credentials all the time (logout, logout-all, a password change, an
account deletion, an admin locking or demoting the caller). Schemathesis answers a 401 on an
authenticated request by asking this provider for a new token and replaying the request once, so
the operations behind the 401 are still exercised. A re-login as the same user would not do: the
fuzzing may have deleted, locked or re-passworded it, so each token belongs to a new account.

The account is made an administrator directly in the database (the API, rightly, has no way to
promote oneself), so the admin operations are fuzzed too.

Environment: AUTH_API_URL (the server's base URL), DATABASE_URL and PSQL (its psql binary).
"""

import os
import subprocess
import uuid

import requests
import schemathesis

API_URL = os.environ["AUTH_API_URL"]
DATABASE_URL = os.environ["DATABASE_URL"]
PSQL = os.environ.get("PSQL", "psql")
PASSWORD = "schemathesis correct horse"


def _post(path, body):
    response = requests.post(f"{API_URL}{path}", json=body, timeout=10)
    if response.status_code >= 300:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text}")
    return response.json()


def _promote(user_id):
    subprocess.run(
        [PSQL, DATABASE_URL, "--no-psqlrc", "--quiet", "-v", "ON_ERROR_STOP=1", "-c",
         f"UPDATE users SET roles = ARRAY['user', 'admin'] WHERE id = '{user_id}'"],
        check=True,
        capture_output=True,
    )


@schemathesis.auth()
class FreshAdministrator:
    def get(self, case, context):
        email = f"fuzz-{uuid.uuid4().hex}@example.com"
        user = _post("/api/auth/register", {"email": email, "password": PASSWORD})
        _promote(user["user"]["id"])
        # A new login, so the access token's `roles` claim carries the promotion.
        return _post("/api/auth/login", {"email": email, "password": PASSWORD})["tokens"]["access_token"]

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = f"Bearer {data}"

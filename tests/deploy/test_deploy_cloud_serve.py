"""`tinycats cloud serve`: the Modal endpoint App built offline, and its container code run
on a fake volume; authentication is on unless --public says otherwise."""

from __future__ import annotations

import importlib
import shutil

import modal
import pytest
from modal._partial_function import _find_partial_methods_for_user_cls, _PartialFunctionFlags

from tinycats.cloud import serving
from tinycats.errors import ConfigError

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient


@pytest.fixture
def serve_app(monkeypatch):
    """serve_app imported with the given settings in its environment; restored afterwards."""
    module = importlib.import_module("tinycats.cloud.serve_app")

    def load(**values):
        settings = serving.build_settings(**values)
        for key, value in serving.settings_env(settings).items():
            monkeypatch.setenv(key, value)
        return importlib.reload(module)

    yield load
    monkeypatch.delenv(serving.SETTINGS_ENV, raising=False)
    importlib.reload(module)


def web_config(module):
    user_cls = module.Server._get_user_cls()
    (web,) = _find_partial_methods_for_user_cls(
        user_cls, _PartialFunctionFlags.WEB_INTERFACE
    ).values()
    return web.params.webhook_config


def test_default_endpoint_needs_modal_proxy_auth_and_restores_a_snapshot(serve_app) -> None:
    m = serve_app(run="clf")
    assert web_config(m).requires_proxy_auth is True  # Modal's edge refuses anonymous calls
    assert m.server_options["secrets"] == []
    assert m.server_options["enable_memory_snapshot"] is True
    spec = m.Server._get_class_service_function()._spec_
    assert spec.gpus == "T4" and set(spec.volumes) == {"/outputs"}
    user_cls = m.Server._get_user_cls()
    before = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_PRE_SNAPSHOT)
    after = _find_partial_methods_for_user_cls(user_cls, _PartialFunctionFlags.ENTER_POST_SNAPSHOT)
    assert set(before) == {"load"} and set(after) == {"to_gpu"}  # weights in, CUDA after


def test_token_auth_reads_a_modal_secret_and_public_has_no_auth(serve_app) -> None:
    m = serve_app(run="clf", auth="token", secret_name="cats-token", gpu=None)
    assert web_config(m).requires_proxy_auth is False
    (secret,) = m.server_options["secrets"]
    assert isinstance(secret, modal.Secret)
    assert m.Server._get_class_service_function()._spec_.gpus is None
    public = serve_app(run="clf", auth="public")
    assert (
        web_config(public).requires_proxy_auth is False and public.server_options["secrets"] == []
    )


def test_the_container_serves_from_the_volume_and_refuses_requests_without_the_token(
    serve_app, store_root, classifier, photos, tmp_path, monkeypatch
) -> None:
    from fake_volume import FakeVolume
    from tinycats.train.evaluation import predict_images

    volume = FakeVolume(tmp_path / "vol")
    shutil.copytree(store_root, volume.backing, dirs_exist_ok=True)
    container = volume.mount("server")
    m = serve_app(run="clf", auth="token")
    monkeypatch.setattr(m, "outputs_volume", container)
    monkeypatch.setattr(m, "OUTPUTS_MOUNT", str(container.path))
    monkeypatch.setenv(serving.TOKEN_ENV, "from-the-secret")

    server = m.Server._get_user_cls()()
    server.load()  # what runs before the snapshot
    server.to_gpu()
    assert container.reloads >= 1 and set(server.models) == {"classifier"}
    calls = []
    server.models["classifier"].model.register_forward_hook(lambda *a: calls.append(1))
    client = TestClient(server.web())
    body = photos[0].read_bytes()
    assert client.post("/predict", content=body).status_code == 401
    assert (
        client.post("/predict", content=body, headers={"Authorization": "Bearer x"}).status_code
        == 403
    )
    assert calls == []
    ok = client.post("/predict", content=body, headers={"Authorization": "Bearer from-the-secret"})
    assert ok.status_code == 200 and calls == [1]
    assert ok.json()["top"] == predict_images(classifier, photos[:1])[0]["top"]


def test_cli_warns_for_public_and_passes_the_settings(monkeypatch, cli) -> None:
    deployed = []

    def fake_deploy(settings):
        deployed.append(settings)
        return {
            "url": "https://x--tinycats-serve-server-web.modal.run",
            "auth": settings.auth,
            "new_token": None,
        }

    monkeypatch.setattr(serving, "deploy", fake_deploy)
    result = cli("cloud", "serve", "clf", "--public", "--max-pixels", "100000")
    assert result.returncode == 0, result.stderr
    assert "anyone with the URL can call this endpoint" in result.stdout + result.stderr
    assert deployed[-1].auth == "public" and deployed[-1].limits.max_pixels == 100_000
    result = cli("cloud", "serve", "clf", "--dit", "gen")
    assert result.returncode == 0 and deployed[-1].auth == "proxy" and deployed[-1].dit == "gen"
    output = result.stdout + result.stderr
    assert "Modal-Key and Modal-Secret" in output and "anyone" not in output


def test_settings_are_validated_with_one_line_errors() -> None:
    with pytest.raises(ConfigError, match="nothing to serve"):
        serving.build_settings()
    with pytest.raises(ConfigError, match="unknown GPU 'K80'"):
        serving.build_settings(run="clf", gpu="K80")
    settings = serving.build_settings(run="clf", dit="gen", auth="token")
    assert serving.settings_from_env(serving.settings_env(settings)) == settings


def test_token_secret_is_created_once_with_a_fresh_token(monkeypatch) -> None:
    """Against the 1.6.4 calls it uses: Secret.from_name(...).hydrate() raises NotFoundError
    for a missing Secret; Secret.objects.create(name, env_dict) makes one."""
    created: dict[str, dict[str, str]] = {}

    class Lookup:
        def __init__(self, name: str, required_keys: list[str]) -> None:
            self.name, self.required_keys = name, required_keys

        def hydrate(self) -> None:
            if self.name not in created:
                raise modal.exception.NotFoundError(f"Secret '{self.name}' not found")
            assert set(self.required_keys) <= created[self.name].keys()

    monkeypatch.setattr(modal.Secret, "from_name", Lookup)
    manager = type(modal.Secret.objects)  # a new manager on every access: patch its class
    monkeypatch.setattr(manager, "create", lambda self, name, env: created.update({name: env}))
    token = serving.ensure_token_secret("cats-token")
    assert token and len(token) >= 32 and created == {"cats-token": {serving.TOKEN_ENV: token}}
    assert serving.ensure_token_secret("cats-token") is None  # kept, never printed again
    assert created["cats-token"][serving.TOKEN_ENV] == token

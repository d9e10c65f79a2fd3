import re
from datetime import timedelta
from pathlib import Path

import pytest

from chatmedia.config import ConfigError, describe, hide_secrets, load_settings


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, cwd=tmp_path)
    assert settings.max_upload_size == 5_242_880
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.public_url == "http://127.0.0.1:8080"
    assert settings.retention is None
    assert settings.allowed_types == ()
    assert settings.database_url.startswith("sqlite:///")


def test_environment_values(tmp_path: Path) -> None:
    env = {
        "CHATMEDIA_MAX_UPLOAD_SIZE": "20MB",
        "CHATMEDIA_ALLOWED_TYPES": "image/*, pdf",
        "CHATMEDIA_RETENTION": "30d",
        "CHATMEDIA_PUBLIC_URL": "https://media.example.com/",
    }
    settings = load_settings(env, cwd=tmp_path)
    assert settings.max_upload_size == 20_000_000
    assert settings.allowed_types == ("image/*", "application/pdf")
    assert settings.retention == timedelta(days=30)
    assert settings.public_url == "https://media.example.com"


def test_bad_value_names_key_and_value(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=re.escape("CHATMEDIA_MAX_UPLOAD_SIZE has value '5XB': not a size")
    ):
        load_settings({"CHATMEDIA_MAX_UPLOAD_SIZE": "5XB"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="CHATMEDIA_PORT has value 'http'"):
        load_settings({"CHATMEDIA_PORT": "http"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="'exe2' is not a known file extension"):
        load_settings({"CHATMEDIA_BLOCKED_TYPES": "exe2"}, cwd=tmp_path)


def test_toml_file_and_environment_precedence(tmp_path: Path) -> None:
    (tmp_path / "chatmedia.toml").write_text(
        'max_upload_size = "1GiB"\nport = 9000\nblocked_types = ["pdf", "text/html"]\n'
    )
    settings = load_settings({"CHATMEDIA_PORT": "9100"}, cwd=tmp_path)
    assert settings.max_upload_size == 1024**3
    assert settings.port == 9100
    assert settings.blocked_types == ("application/pdf", "text/html")


def test_toml_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "custom.toml"
    path.write_text('max_upload_size = "lots"\n')
    with pytest.raises(
        ConfigError, match=re.escape("custom.toml key max_upload_size has value 'lots'")
    ):
        load_settings({"CHATMEDIA_CONFIG": str(path)}, cwd=tmp_path)
    path.write_text("colour = 1\n")
    with pytest.raises(ConfigError, match="unknown keys: colour"):
        load_settings({"CHATMEDIA_CONFIG": str(path)}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_settings({"CHATMEDIA_CONFIG": str(tmp_path / "missing.toml")}, cwd=tmp_path)


def test_describe_hides_secrets(tmp_path: Path) -> None:
    env = {"CHATMEDIA_DATABASE_URL": "sqlite:///x.db"}
    settings = load_settings(env, cwd=tmp_path)
    rows = {key: (value, source) for key, value, source in describe(settings, env)}
    assert rows["CHATMEDIA_MAX_UPLOAD_SIZE"] == ("5242880", "default")
    assert rows["CHATMEDIA_DATABASE_URL"][1] == "env CHATMEDIA_DATABASE_URL"
    assert rows["CHATMEDIA_PUBLIC_URL"][1] == "derived"
    assert rows["CHATMEDIA_ALLOWED_TYPES"][0] == "(any)"
    assert rows["CHATMEDIA_RETENTION_INTERVAL"][0] == "600s"


def test_hide_secrets() -> None:
    assert hide_secrets("postgresql://app:s3cret@db/x") == "postgresql://app:***@db/x"
    assert hide_secrets("sqlite:///data/x.db") == "sqlite:///data/x.db"
    assert (
        hide_secrets("s3://b/p?region=r&access_key_id=AK&secret_access_key=x/y+z&session_token=t")
        == "s3://b/p?region=r&access_key_id=AK&secret_access_key=***&session_token=***"
    )
    assert hide_secrets("http://[::1") == "***"


def test_storage_url_is_checked_at_start_and_its_secrets_stay_hidden(tmp_path: Path) -> None:
    url = "s3://media/chat?endpoint=http://127.0.0.1:9000&access_key_id=AK&secret_access_key=SK1"
    env = {"CHATMEDIA_STORAGE_URL": url, "CHATMEDIA_S3_REDIRECT_DOWNLOADS": "true"}
    settings = load_settings(env, cwd=tmp_path)
    assert settings.storage_url == url
    assert settings.s3_redirect_downloads
    shown = {key: value for key, value, _ in describe(settings, env)}
    assert "SK1" not in shown["CHATMEDIA_STORAGE_URL"]
    bad = {"CHATMEDIA_STORAGE_URL": url.replace("media", "Not_A_Bucket")}
    with pytest.raises(ConfigError, match="CHATMEDIA_STORAGE_URL is not usable: bucket") as e:
        load_settings(bad, cwd=tmp_path)
    assert "SK1" not in str(e.value)
    with pytest.raises(ConfigError, match="CHATMEDIA_STORAGE_URL has value 'ftp://x'"):
        load_settings({"CHATMEDIA_STORAGE_URL": "ftp://x"}, cwd=tmp_path)
    with pytest.raises(ConfigError, match="S3_REDIRECT_DOWNLOADS needs an S3 store"):
        load_settings({"CHATMEDIA_S3_REDIRECT_DOWNLOADS": "yes"}, cwd=tmp_path)
    assert load_settings({}, cwd=tmp_path).storage_url is None


@pytest.mark.parametrize(
    ("given", "effective"),
    [
        ("sqlite:///x.db", "sqlite:///x.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite:///x.db"),
        ("postgresql://app@db/chat", "postgresql+asyncpg://app@db/chat"),
        ("postgres://app:pw@db:5433/chat", "postgresql+asyncpg://app:pw@db:5433/chat"),
        ("postgresql+asyncpg://app@db/chat", "postgresql+asyncpg://app@db/chat"),
    ],
)
def test_database_urls(tmp_path: Path, given: str, effective: str) -> None:
    settings = load_settings({"CHATMEDIA_DATABASE_URL": given}, cwd=tmp_path)
    assert settings.database_url == effective


@pytest.mark.parametrize("bad", ["mysql://app:hunter2@db/x", "postgresql:///x", "x.db"])
def test_bad_database_url_is_named_without_its_password(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="CHATMEDIA_DATABASE_URL has value") as caught:
        load_settings({"CHATMEDIA_DATABASE_URL": bad}, cwd=tmp_path)
    assert "hunter2" not in str(caught.value)


def test_accel_redirect_is_a_location_of_the_local_store(tmp_path: Path) -> None:
    settings = load_settings({"CHATMEDIA_ACCEL_REDIRECT": "/internal-blobs/"}, cwd=tmp_path)
    assert settings.accel_redirect == "/internal-blobs/"
    assert load_settings({}, cwd=tmp_path).accel_redirect is None
    for bad in ("internal/", "/internal", "/a b/", "/../"):
        with pytest.raises(ConfigError, match="ACCEL_REDIRECT"):
            load_settings({"CHATMEDIA_ACCEL_REDIRECT": bad}, cwd=tmp_path)
    s3 = "s3://b/p?endpoint=http://127.0.0.1:9000&region=us-east-1"
    with pytest.raises(ConfigError, match="needs the local store"):
        load_settings(
            {"CHATMEDIA_ACCEL_REDIRECT": "/x/", "CHATMEDIA_STORAGE_URL": s3}, cwd=tmp_path
        )

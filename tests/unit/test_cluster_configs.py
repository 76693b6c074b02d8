"""cluster/ is declarative: every file parses, has the keys it needs, and agrees with the code and each other.

Versions (Ray, Python) agree across pyproject.toml, the installed Ray, the launcher, the
Dockerfile and every KubeRay manifest; token authentication is on everywhere; jobs' and the
Serve app's arguments are valid for the configs the code reads; the Grafana dashboard names
only metrics that something emits. The security checks scan the repository's Python.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import re
import tomllib
from pathlib import Path

import pytest
import yaml

from coldstart import submit

ROOT = Path(__file__).resolve().parents[2]
CLUSTER = ROOT / "cluster"
KUBERAY = CLUSTER / "kuberay"


def _yaml(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def _manifests() -> dict[str, list[dict]]:
    """kind -> documents, over every file in cluster/kuberay/."""
    out: dict[str, list[dict]] = {}
    for path in sorted(KUBERAY.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            out.setdefault(doc["kind"], []).append(doc)
    return out


def _ray_pin() -> str:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    (ray,) = [d for d in deps if re.match(r"ray[\[=<>]", d)]
    match = re.search(r"==\s*([\d.]+)$", ray)
    assert match, f"pyproject.toml must pin Ray exactly (client and cluster must match): {ray}"
    return match.group(1)


def _images() -> list[tuple[str, str]]:
    """(where, image) for every container image named in cluster/."""
    found = []
    launcher = _yaml(CLUSTER / "launcher.yaml")
    found.append(("launcher docker.image", launcher["docker"]["image"]))
    for name, node in launcher["available_node_types"].items():
        for key, image in (node.get("docker") or {}).items():
            if key.endswith("image"):
                found.append((f"launcher {name}", image))
    for kind, docs in _manifests().items():
        for doc in docs:
            for image in re.findall(r"image: (\S+)", yaml.safe_dump(doc)):
                found.append((f"{kind} {doc['metadata']['name']}", image))
    base = re.search(r"ARG RAY_IMAGE=(\S+)", (CLUSTER / "Dockerfile").read_text()).group(1)
    found.append(("Dockerfile base", base))
    return found


def _cluster_specs() -> list[tuple[str, dict]]:
    specs = [(f"RayCluster {d['metadata']['name']}", d["spec"]) for d in _manifests()["RayCluster"]]
    specs += [(f"RayService {d['metadata']['name']}", d["spec"]["rayClusterConfig"]) for d in _manifests()["RayService"]]
    return specs


def _groups(spec: dict) -> list[tuple[str, dict]]:
    return [("head", spec["headGroupSpec"])] + [(g["groupName"], g) for g in spec["workerGroupSpecs"]]


def test_every_file_parses():
    files = [p for p in CLUSTER.rglob("*") if p.suffix in (".yaml", ".yml", ".json")]
    assert len(files) >= 9
    for path in files:
        docs = [json.loads(path.read_text())] if path.suffix == ".json" else list(yaml.safe_load_all(path.read_text()))
        assert docs and all(isinstance(d, dict) for d in docs), path


def test_ray_and_python_versions_agree():
    import sys

    import ray

    pin = _ray_pin()
    assert ray.__version__ == pin, "the installed Ray is not the one pyproject.toml pins"
    python_tags = set()
    for where, image in _images():
        match = re.fullmatch(r"(rayproject/ray|coldstart):(?:ray)?([\d.]+)-py(\d)(\d+)(-gpu)?", image)
        assert match, f"{where}: image {image} is not rayproject/ray:V-pyXY[-gpu] or coldstart:rayV-pyXY[-gpu]"
        assert match.group(2) == pin, f"{where}: {image} runs Ray {match.group(2)}, pyproject.toml pins {pin}"
        python_tags.add((int(match.group(3)), int(match.group(4))))
    assert len(python_tags) == 1, f"images disagree on Python: {python_tags}"
    (python,) = python_tags
    low = re.search(r">=\s*(\d+)\.(\d+)", tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
                    ["requires-python"])
    assert python >= (int(low.group(1)), int(low.group(2)))
    assert python == sys.version_info[:2], "images run another Python than the one the project is tested on"
    for where, spec in _cluster_specs():
        assert spec["rayVersion"] == pin, where


def test_launcher_is_valid_for_ray_up():
    """The cluster launcher's own schema, shipped with the Ray we pin."""
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    jsonschema.validate(_yaml(CLUSTER / "launcher.yaml"), schema)


def test_launcher_has_head_cpu_and_gpu_groups_with_token_auth():
    launcher = _yaml(CLUSTER / "launcher.yaml")
    types = launcher["available_node_types"]
    assert launcher["head_node_type"] in types
    workers = {name: t for name, t in types.items() if name != launcher["head_node_type"]}
    gpu = [t for t in workers.values() if (t.get("docker") or {}).get("worker_image", "").endswith("-gpu")]
    cpu = [t for t in workers.values() if not (t.get("docker") or {}).get("worker_image", "").endswith("-gpu")]
    assert gpu and cpu, "a CPU and a GPU worker group"
    for t in workers.values():
        assert t["min_workers"] <= t["max_workers"]
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in launcher[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    head_start = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in head_start and "--metrics-export-port" in head_start
    # The token reaches the nodes from the user's home, never from the repository.
    mounts = launcher["file_mounts"]
    token_targets = [t for t in mounts if t.endswith(".ray/auth_token")]
    assert token_targets and all(mounts[t].startswith("~/") for t in token_targets)
    assert any("pip install" in c and "/home/ray/coldstart" in c for c in launcher["setup_commands"])


def test_kuberay_clusters_have_token_auth_and_cpu_gpu_groups():
    for where, spec in _cluster_specs():
        assert spec["authOptions"]["mode"] == "token", where
        assert spec["authOptions"]["secretName"], f"{where}: the token comes from a Secret"
        groups = dict(_groups(spec))
        assert "head" in groups and len(groups) >= 3, where
        gpu = [g for g in spec["workerGroupSpecs"]
               if "nvidia.com/gpu" in g["template"]["spec"]["containers"][0]["resources"]["limits"]]
        assert gpu and len(gpu) < len(spec["workerGroupSpecs"]), f"{where}: a CPU and a GPU worker group"
        for g in gpu:
            assert g["template"]["spec"]["containers"][0]["image"].endswith("-gpu"), where
        for name, group in _groups(spec):
            assert "metrics-export-port" in group["rayStartParams"], f"{where} {name}"
            for c in group["template"]["spec"]["containers"]:
                port_names = {p["name"] for p in c.get("ports", [])}
                assert "metrics" in port_names, f"{where} {name}: the ray-kuberay scrape job keeps port 'metrics'"
                # No token or key written into a manifest: values come from Secrets only.
                for env in c.get("env", []):
                    assert "value" not in env or not re.search(r"TOKEN|KEY|SECRET", env["name"]), env


def test_rayjobs_run_known_commands_with_valid_arguments():
    from coldstart.cli import app
    from coldstart.config import load_config

    clusters = {d["metadata"]["name"] for d in _manifests()["RayCluster"]}
    jobs = {d["metadata"]["name"]: d for d in _manifests()["RayJob"]}
    assert {"coldstart-embed", "coldstart-distill", "coldstart-tune"} <= set(jobs)
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    for name, job in jobs.items():
        spec = job["spec"]
        assert spec["clusterSelector"]["ray.io/cluster"] in clusters, name
        yaml.safe_load(spec["runtimeEnvYAML"])
        argv = spec["entrypoint"].split()
        assert argv[:3] == ["python", "-m", "coldstart.cli"] and argv[3] in submit.JOBS, name
        paths = [a for a in argv if a.startswith("/")]
        assert paths and all(p.startswith("/mnt/coldstart/") for p in paths), f"{name}: paths on the shared volume"
        if argv[3] == "embed":
            from trainers.embed import EmbedConfig

            load_config(EmbedConfig, None, argv[4:])
        elif argv[3:5] == ["train", "distill"]:
            from trainers.distill import DistillConfig

            load_config(DistillConfig, None, argv[5:])
        else:
            assert argv[3] == "tune", name
            if "tune" not in registered:
                continue  # `coldstart tune` lands with the tuning issue; its fields are checked then.
            assert "--help-fields" not in argv


def _serve_deployments() -> set[str]:
    """Classes under serve/ decorated with @serve.deployment: the names a Serve config may override."""
    names = set()
    for path in (ROOT / "serve").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and any("deployment" in ast.unparse(d) for d in node.decorator_list):
                names.add(node.name)
    return names


def _serve_apps(config: dict) -> dict[str, dict]:
    return {a["name"]: a for a in config["applications"]}


def test_rayservice_carries_a_serve_config_that_matches_the_app():
    (service,) = _manifests()["RayService"]
    config = yaml.safe_load(service["spec"]["serveConfigV2"])
    apps = _serve_apps(config)
    # the HTTP front and the served models' app, which the front's routing names (serve.app.CHAIN_APP)
    from serve.app import CHAIN_APP

    assert {n: a["import_path"] for n, a in apps.items()} == {"coldstart": "serve.app:build_app",
                                                              CHAIN_APP: "serve.app:build_chain"}
    assert apps[CHAIN_APP]["route_prefix"] is None and apps["coldstart"]["route_prefix"] == "/"
    from coldstart.serving.config import ServeConfig

    for app in apps.values():
        module, attr = app["import_path"].split(":")
        builder = ROOT / (module.replace(".", "/") + ".py")
        assert f"def {attr}(" in builder.read_text()
        deployments = {d["name"] for d in app.get("deployments", [])}
        assert deployments and deployments <= _serve_deployments(), deployments - _serve_deployments()
        ServeConfig.model_validate(app["args"])  # the builder's own validation; unknown keys are errors
        assert app["args"]["artifacts"].startswith("/mnt/coldstart/")
    assert apps["coldstart"]["args"] == apps[CHAIN_APP]["args"]  # one artifacts folder, one store


def test_rayservice_takes_the_registration_store_from_a_secret():
    """Ranker replicas on several pods share one store: a database whose URL (with its password) comes from a
    Secret on every container, required, so a missing Secret stops the pods instead of falling back to a file
    log on the shared volume."""
    from coldstart.serving.config import ServeConfig
    from coldstart.serving.stores import STORE_ENV

    (service,) = _manifests()["RayService"]
    for name, group in _groups(service["spec"]["rayClusterConfig"]):
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert STORE_ENV in env, f"{name}: no {STORE_ENV}"
            ref = env[STORE_ENV].get("valueFrom", {}).get("secretKeyRef")
            assert ref and "value" not in env[STORE_ENV], f"{name}: {STORE_ENV} must come from a Secret"
            assert ref["name"] == "coldstart-store-url" and ref["key"] == "url" and not ref.get("optional"), name
    app = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]
    assert "store" not in app["args"], "the URL holds a password: it comes from the Secret, not the manifest"
    url = "postgresql://coldstart:pw@postgres.default.svc:5432/coldstart?sslmode=require"
    assert ServeConfig.model_validate({**app["args"], "store": url}).store_location() == url


def test_rayservice_serves_http_through_haproxy_on_every_node():
    """What `coldstart serve` starts locally (ServeConfig.proxy haproxy), the cluster gets too: Serve reads the
    flag when each node's processes start, so every container sets it, the same way."""
    from serve.local import proxy_variables

    flag = "RAY_SERVE_ENABLE_HA_PROXY"
    (service,) = _manifests()["RayService"]
    for name, group in _groups(service["spec"]["rayClusterConfig"]):
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            assert env.get(flag, {}).get("value") == proxy_variables("haproxy")[flag], f"{name}: {flag} not set"


def test_rayservice_agrees_with_the_serve_engineers_config():
    """If serve/ ships its own Serve config, the RayService must deploy the same application."""
    ours = _serve_apps(yaml.safe_load(_manifests()["RayService"][0]["spec"]["serveConfigV2"]))
    theirs_files = [p for p in (ROOT / "serve").glob("*.y*ml") if "applications" in (_yaml(p) or {})]
    assert theirs_files, "serve/ ships its Serve config YAML (serve/config.yaml)"
    for path in theirs_files:
        theirs = _serve_apps(_yaml(path))
        assert set(theirs) == set(ours), f"{path.name}: application names differ"
        for name, app in theirs.items():
            assert app["import_path"] == ours[name]["import_path"], path.name
            assert app.get("route_prefix", "/") == ours[name].get("route_prefix", "/"), path.name
            mine = {d["name"] for d in ours[name].get("deployments", [])}
            other = {d["name"] for d in app.get("deployments", [])}
            assert mine <= _serve_deployments() and other <= _serve_deployments()
            assert not other or mine == other, f"{path.name}: deployments {other} vs RayService {mine}"


def test_runtime_env_ships_code_not_weight():
    env = submit.load_runtime_env()
    assert Path(env["working_dir"]) == ROOT
    for must in (".git/", ".venv/", "out/"):
        assert must in env["excludes"]
    patterns = [e.rstrip("/") for e in env["excludes"]]

    def excluded(rel: Path) -> bool:
        return any(fnmatch.fnmatch(part, p.split("/")[-1]) for part in rel.parts for p in patterns)

    total = sum(p.stat().st_size for p in ROOT.rglob("*") if p.is_file() and not excluded(p.relative_to(ROOT)))
    # The Jobs API refuses big working_dir packages; ours is code and small configs.
    assert total < 20 * 2**20, f"working_dir would ship {total / 2**20:.1f} MiB"


def test_submit_entrypoint_and_token_lookup(tmp_path, monkeypatch):
    assert submit.entrypoint("embed", ["--out", "a b"]) == "python -m coldstart.cli embed --out 'a b'"
    with pytest.raises(submit.SubmitError):
        submit.entrypoint("rm", [])
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    assert submit.auth_token() is None
    (tmp_path / ".ray").mkdir()
    (tmp_path / ".ray" / "auth_token").write_text("from-file\n")
    assert submit.auth_token() == "from-file"
    path = tmp_path / "t"
    path.write_text("from-path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    assert submit.auth_token() == "from-path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "from-env")
    assert submit.auth_token() == "from-env"


def test_prometheus_scrapes_ray_nodes():
    import ray._private.ray_constants as rc

    config = _yaml(CLUSTER / "monitoring" / "prometheus.yml")
    jobs = {j["job_name"]: j for j in config["scrape_configs"]}
    files = jobs["ray"]["file_sd_configs"][0]["files"]
    assert any(f.endswith(rc.PROMETHEUS_SERVICE_DISCOVERY_FILE) for f in files)
    keep = [r for r in jobs["ray-kuberay"]["relabel_configs"] if r.get("action") == "keep"]
    assert {"__meta_kubernetes_pod_container_port_name"} <= {s for r in keep for s in r["source_labels"]}
    assert any(r["regex"] == "metrics" for r in keep)


def _ray_metric_templates() -> list[re.Pattern]:
    """Names Ray itself registers (string literals and f-string templates in its metric modules)."""
    import ray

    base = Path(ray.__file__).parent
    files = [*base.glob("serve/_private/*.py"), *base.glob("train/v2/_internal/metrics/*.py"),
             *base.glob("dashboard/modules/reporter/*.py"), *base.glob("data/_internal/*.py")]
    templates = set()
    for path in files:
        templates.update(re.findall(r"""["']((?:serve|train|node|data)_[a-z_{}]+)["']""", path.read_text()))
    return [re.compile(re.sub(r"\\\{[a-z_]+\\\}", "[a-z]+", re.escape(t))) for t in templates]


SERVE_METRICS = {"coldstart_requests_total", "coldstart_stage_latency_ms", "coldstart_index_size"}


def test_grafana_dashboard_names_only_emitted_metrics():
    from trainers import prometheus as train_metrics

    dashboard = json.loads((CLUSTER / "monitoring" / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in re.findall(r"\b(ray_[a-z_]+)\{", e)}
    assert names, exprs
    ours_train = {f"ray_{n}" for n in train_metrics.NAMES}
    serve_source = "\n".join(p.read_text() for p in (ROOT / "serve").glob("*.py"))
    ray_templates = _ray_metric_templates()
    unknown = []
    for name in sorted(names):
        bare = re.sub(r"_(bucket|sum|count)$", "", name)
        if bare.startswith("ray_coldstart_train_"):
            ok = bare in ours_train
        elif bare.startswith("ray_coldstart_"):
            # The names agreed with serve/; once serve/ registers metrics, it must register these.
            ok = bare[4:] in SERVE_METRICS and (f'"{bare[4:]}"' in serve_source or "metrics." not in serve_source)
        else:
            core = re.sub(r"_total$", "", bare[4:])
            ok = any(t.fullmatch(core) or t.fullmatch(bare[4:]) for t in ray_templates)
        if not ok:
            unknown.append(name)
    assert not unknown, f"the dashboard charts metrics nothing emits: {unknown}"
    # Both sides are charted: training/tuning and serving.
    assert ours_train & names and {"ray_coldstart_requests_total", "ray_coldstart_stage_latency_ms_bucket"} <= names


SOURCE_DIRS = ("coldstart", "trainers", "tuning", "serve", "benchmarks", "tests")


def _python_files():
    for folder in SOURCE_DIRS:
        yield from (ROOT / folder).rglob("*.py")


def _calls(tree: ast.AST, dotted: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted:
            yield node


def test_no_pickle_in_our_code():
    """Nothing of ours (de)serialises pickles; torch.load only with weights_only=True.

    torch.save is allowed only in trainers/, for optimizer state inside Ray Train checkpoints
    (read back with weights_only=True); what coldstart/ and serve/ write and load as model
    artifacts is safetensors, JSON and parquet.
    """
    offenders = []
    for path in _python_files():
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                mods = [node.module or ""]
            else:
                continue
            offenders += [f"{rel}: imports {m}" for m in mods
                          if m.split(".")[0] in ("pickle", "cPickle", "cloudpickle", "dill", "joblib", "shelve")]
        for call in _calls(tree, "torch.load"):
            weights_only = [k for k in call.keywords if k.arg == "weights_only"]
            if not (weights_only and isinstance(weights_only[0].value, ast.Constant) and weights_only[0].value.value is True):
                offenders.append(f"{rel}:{call.lineno}: torch.load without weights_only=True")
        for name in ("pd.read_pickle", "pandas.read_pickle"):
            offenders += [f"{rel}:{c.lineno}: {name}" for c in _calls(tree, name)]
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "to_pickle":
                offenders.append(f"{rel}:{node.lineno}: to_pickle")
            if isinstance(node, ast.keyword) and node.arg == "allow_pickle" and getattr(node.value, "value", None) is True:
                offenders.append(f"{rel}: allow_pickle=True")
        if rel.parts[0] in ("coldstart", "serve"):
            offenders += [f"{rel}:{c.lineno}: torch.save in artifact code" for c in _calls(tree, "torch.save")]
    assert not offenders, offenders


def test_the_pickle_scan_catches_what_it_is_for(tmp_path, monkeypatch):
    bad = tmp_path / "coldstart" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import pickle\nimport torch\nw = torch.load('m.pt')\nok = torch.load('m.pt', weights_only=True)\n"
                   "torch.save(w, 'x.pt')\n")
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    with pytest.raises(AssertionError) as failure:
        test_no_pickle_in_our_code()
    text = str(failure.value)
    assert "imports pickle" in text and "bad.py:3: torch.load" in text and "bad.py:4" not in text
    assert "torch.save in artifact code" in text


def test_model_artifacts_are_safetensors_and_json(tmp_path, tiny_split):
    """A real artifact written by the code that writes them holds no pickle-format file."""
    import numpy as np

    from coldstart.evaluate import SplitData
    from coldstart.data.split import load_split
    from coldstart.models.coldstart_model import save_backbone

    data = SplitData.from_split(load_split(tiny_split))
    rng = np.random.default_rng(0)
    users = rng.normal(size=(len(data.user_ids), 8)).astype(np.float32)
    items = rng.normal(size=(len(data.item_ids), 8)).astype(np.float32)
    save_backbone(tmp_path / "bb", data, users, items, {"epoch": 0})
    files = [p for p in (tmp_path / "bb").rglob("*") if p.is_file()]
    assert files and {p.suffix for p in files} <= {".safetensors", ".json", ".parquet"}, files
    assert any(p.suffix == ".safetensors" for p in files)


def test_ports_picked_before_they_are_bound_are_free_distinct_and_below_the_ephemeral_range():
    """HAProxy's ports are picked when a cluster starts and bound minutes later: each differs from the others,
    none is in use, and none comes from the range the kernel hands to outgoing connections meanwhile."""
    import socket

    from coldstart.ports import QUIET_PORTS, free_port
    from serve.local import proxy_variables

    ports = [int(value) for name, value in proxy_variables("haproxy").items() if name.endswith("_PORT")]
    assert len(ports) == 4 and len(set(ports)) == 4 and all(p in QUIET_PORTS and p < 32768 for p in ports)
    with socket.socket() as held:
        port = free_port(host="127.0.0.1")
        held.bind(("127.0.0.1", port))
        held.listen()
        with pytest.raises(OSError, match=f"no free port in {port}-{port}"):
            free_port(host="127.0.0.1", ports=range(port, port + 1))  # in use
    with pytest.raises(OSError):
        free_port({port}, host="127.0.0.1", ports=range(port, port + 1))  # free, but taken by an earlier pick


def test_rayservice_requires_its_keys_from_a_secret():
    """Closed by default: every container takes a write and a read key from the Secret coldstart-api-key, which
    is required (a missing Secret stops the pods instead of serving an open endpoint)."""
    (service,) = _manifests()["RayService"]
    for name, group in _groups(service["spec"]["rayClusterConfig"]):
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container.get("env", [])}
            for variable, key in (("COLDSTART_API_KEY", "api_key"), ("COLDSTART_READ_KEY", "read_key")):
                ref = env.get(variable, {}).get("valueFrom", {}).get("secretKeyRef")
                assert ref == {"name": "coldstart-api-key", "key": key}, f"{name}: {variable} {ref}"


def test_every_container_runs_as_non_root_without_privilege_escalation():
    containers = []
    for kind in ("RayService", "RayCluster"):
        for doc in _manifests().get(kind, []):
            spec = doc["spec"]["rayClusterConfig"] if kind == "RayService" else doc["spec"]
            for name, group in _groups(spec):
                containers += [(f"{kind}/{name}", c) for c in group["template"]["spec"]["containers"]]
    assert len(containers) >= 6
    for name, container in containers:
        context = container.get("securityContext", {})
        assert context.get("runAsNonRoot") is True and context.get("allowPrivilegeEscalation") is False, name
        assert context.get("capabilities", {}).get("drop") == ["ALL"], name
    assert re.search(r"^USER 1000", (CLUSTER / "Dockerfile").read_text(), re.MULTILINE)


def test_only_the_ingress_reaches_serve_and_the_dashboard_stays_inside():
    (policy,) = _manifests()["NetworkPolicy"]
    rules = policy["spec"]["ingress"]
    opened = {p["port"] for rule in rules if "namespaceSelector" in rule["from"][0] for p in rule.get("ports", [])}
    assert opened == {8000, 8080}  # serve to the ingress, metrics to monitoring; never 8265, 10001 or 6379
    assert all("ports" in rule or "podSelector" in rule["from"][0] for rule in rules)

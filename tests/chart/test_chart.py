"""The Helm chart, tested with Helm's own Go SDK (helm-python-sdk): lint, render with several
value sets, and check the rendered objects against the generators and the binaries they run.

Run from the repository root after `cargo build`: python3 -m unittest discover -s tests/chart
"""

import os
import subprocess
import tempfile
import unittest
from pathlib import Path

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stowage-operator"
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
NAMESPACE = "stowage-system"

S3_REGISTRY = {
    "replicas": 2,
    "autoscaling": {"minReplicas": 2, "maxReplicas": 6},
    "storage": {"s3": {"bucket": "images", "endpoint": "http://garage.storage:3900",
                       "pathStyle": True, "credentialsSecret": {"name": "s3-credentials"}}},
}

VALUE_SETS = {
    "defaults": {},
    "namespaced": {"watchNamespace": "team-a"},
    "ha": {"replicaCount": 2},
    "in-use": {"inUseDigests": {"namespaces": ["team-a", "team-b"], "keepFor": "48h"}},
    "in-use-everywhere": {"inUseDigests": {"namespaces": ["*"]}},
    "example": {"exampleRegistry": {"enabled": True, "name": "images", "spec": S3_REGISTRY},
                "serviceMonitor": {"enabled": True}},
}


def render(values):
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name="stowage", namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in manifests.items():
        if path.endswith("NOTES.txt"):
            continue
        objects.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return objects


def of_kind(objects, kind):
    return [o for o in objects if o["kind"] == kind]


def generated(what):
    out = subprocess.run([TARGET / "crdgen", what], check=True, capture_output=True, text=True)
    return yaml.safe_load(out.stdout)


class Chart(unittest.TestCase):
    def test_lints_clean_with_every_value_set(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE)
                self.assertEqual(report["errors"], [])
                serious = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(serious, [])

    def test_the_crd_is_the_generated_one_and_is_kept(self):
        crds = of_kind(render({}), "CustomResourceDefinition")
        self.assertEqual(len(crds), 1)
        crd = crds[0]
        self.assertEqual(crd["metadata"].pop("annotations"), {"helm.sh/resource-policy": "keep"})
        expected = yaml.safe_load((ROOT / "crds" / "registries.stowage.dev.yaml").read_text())
        self.assertEqual(crd, expected)
        self.assertEqual(crd, generated("crd"))
        self.assertEqual(of_kind(render({"crds": {"install": False}}), "CustomResourceDefinition"), [])

    def test_rbac_is_the_generated_rules_cluster_wide_or_in_one_namespace(self):
        rules = generated("rbac")
        objects = render({})
        (role,) = of_kind(objects, "ClusterRole")
        self.assertEqual(role["rules"], rules)
        (binding,) = of_kind(objects, "ClusterRoleBinding")
        self.assertEqual(binding["subjects"][0]["namespace"], NAMESPACE)
        self.assertEqual(binding["subjects"][0]["name"], of_kind(objects, "ServiceAccount")[0]["metadata"]["name"])
        self.assertEqual(of_kind(objects, "Role"), [], "no leader election with one replica")

        objects = render(VALUE_SETS["namespaced"])
        self.assertEqual(of_kind(objects, "ClusterRole"), [])
        (role,) = of_kind(objects, "Role")
        self.assertEqual(role["metadata"]["namespace"], "team-a")
        self.assertEqual(role["rules"], rules)
        (binding,) = of_kind(objects, "RoleBinding")
        self.assertEqual(binding["roleRef"]["kind"], "Role")
        args = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--namespace=team-a", args)

    def test_pods_are_listed_for_digests_in_use_only_where_asked(self):
        pods_list = [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
        objects = render(VALUE_SETS["in-use"])
        roles = of_kind(objects, "Role")
        self.assertEqual(sorted(r["metadata"]["namespace"] for r in roles), ["team-a", "team-b"])
        for role in roles:
            self.assertEqual(role["rules"], pods_list)
        bindings = of_kind(objects, "RoleBinding")
        self.assertEqual(sorted(b["metadata"]["namespace"] for b in bindings), ["team-a", "team-b"])
        args = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--in-use-namespaces=team-a,team-b", args)
        self.assertIn("--in-use-keep-for=48h", args)

        objects = render(VALUE_SETS["in-use-everywhere"])
        in_use = [r for r in of_kind(objects, "ClusterRole") if r["metadata"]["name"].endswith("-in-use")]
        self.assertEqual([r["rules"] for r in in_use], [pods_list])
        self.assertEqual(of_kind(objects, "Role"), [])
        args = of_kind(objects, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertIn("--in-use-namespaces=*", args)

        args = of_kind(render({}), "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
        self.assertFalse([a for a in args if a.startswith("--in-use")], "off unless asked")

    def test_more_than_one_replica_elects_a_leader(self):
        objects = render(VALUE_SETS["ha"])
        (deployment,) = of_kind(objects, "Deployment")
        self.assertEqual(deployment["spec"]["replicas"], 2)
        self.assertIn("--leader-election", deployment["spec"]["template"]["spec"]["containers"][0]["args"])
        (role,) = of_kind(objects, "Role")
        self.assertEqual(role["metadata"]["namespace"], NAMESPACE)
        self.assertEqual(role["rules"], generated("leader-election-rbac"))

    def test_the_operator_accepts_its_rendered_args(self):
        for name, values in VALUE_SETS.items():
            with self.subTest(values=name):
                (deployment,) = of_kind(render(values), "Deployment")
                container = deployment["spec"]["template"]["spec"]["containers"][0]
                env = {"PATH": os.environ["PATH"], "POD_NAME": "stowage-0", "POD_NAMESPACE": NAMESPACE}
                for var in container["env"]:
                    self.assertIn(var["name"], env, "the environment the test fills in")
                result = subprocess.run([TARGET / "stowage-operator", *container["args"], "--check-config"],
                                        env=env, capture_output=True, text=True)
                self.assertEqual(result.returncode, 0, result.stderr)
                probe = container["readinessProbe"]["httpGet"]["path"]
                self.assertEqual(probe, "/readyz")
        broken = subprocess.run([TARGET / "stowage-operator", "--log-format=xml", "--check-config"],
                                capture_output=True, text=True)
        self.assertNotEqual(broken.returncode, 0, "the check can fail")

    def test_the_schema_rejects_wrong_values(self):
        chart = helm.Chart.load(str(CHART))
        for values in VALUE_SETS.values():
            chart.validate_schema(values)
        for bad in [{"replicaCount": 0}, {"replicaCount": "two"}, {"logFormat": "xml"},
                    {"image": {"pullPolicy": "Sometimes"}}, {"unknown": True},
                    {"watchNamespace": "Team_A"}, {"metrics": {"port": 70000}},
                    {"inUseDigests": {"namespaces": ["Team_A"]}}, {"inUseDigests": {"keepFor": "a day"}},
                    {"exampleRegistry": {"enabled": True, "spec": {"replicas": 1}}}]:
            with self.subTest(values=bad):
                with self.assertRaises(helm.HelmValuesError):
                    chart.validate_schema(bad)

    def test_the_example_registry_is_valid_and_made_after_the_crd(self):
        objects = render(VALUE_SETS["example"])
        (registry,) = of_kind(objects, "Registry")
        self.assertEqual(registry["metadata"]["namespace"], NAMESPACE)
        self.assertIn("post-install", registry["metadata"]["annotations"]["helm.sh/hook"])
        self.assertEqual(len(of_kind(objects, "ServiceMonitor")), 1)
        with tempfile.NamedTemporaryFile("w", suffix=".yaml") as file:
            yaml.safe_dump(registry, file)
            file.flush()
            check = subprocess.run([TARGET / "crdgen", "check", file.name], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertEqual(of_kind(render({}), "Registry"), [])

    def test_the_examples_validate_against_the_crd(self):
        examples = sorted(str(p) for p in (ROOT / "examples").glob("*.yaml"))
        self.assertTrue(examples)
        check = subprocess.run([TARGET / "crdgen", "check", *examples], capture_output=True, text=True)
        self.assertEqual(check.returncode, 0, check.stderr)
        self.assertIn("checked", check.stdout)


if __name__ == "__main__":
    unittest.main()

"""config/prometheus.yml passes promtool."""

import subprocess


def test_promtool_accepts_the_scrape_config(repo_root, tools):
    result = subprocess.run([tools.find("promtool"), "check", "config", "config/prometheus.yml"],
                            cwd=repo_root, check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr

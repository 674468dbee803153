"""The annotator's side of the Label Studio round trip test (tests/integration/stage1.rs).

Drives a real Label Studio server through its HTTP API as a person would through its
UI: signs in, creates a personal access token, creates a project with synpref's
labelling config, imports synpref's exported tasks, annotates every task (the choice
the test asks for, per pair id), and writes the project's JSON export — the file synpref
imports back as gold labels.

usage: label_studio_client.py URL EMAIL PASSWORD CONFIG.xml TASKS.json ANSWERS.json EXPORT.json
ANSWERS.json maps pair_id -> "A" | "B" | "Undecidable"; tasks without an answer stay
unannotated.
"""
import json
import sys

import requests


def main():
    url, email, password, config_path, tasks_path, answers_path, export_path = sys.argv[1:8]
    s = requests.Session()
    # Session sign-in (Django form with CSRF), then a personal access token (JWT refresh
    # token) exchanged for an access token: legacy tokens are off in Label Studio >= 1.20.
    s.get(f"{url}/user/login/")
    r = s.post(
        f"{url}/user/login/",
        data={"email": email, "password": password, "csrfmiddlewaretoken": s.cookies["csrftoken"]},
        headers={"Referer": f"{url}/user/login/"},
    )
    r.raise_for_status()
    r = s.post(f"{url}/api/token/", headers={"X-CSRFToken": s.cookies["csrftoken"], "Referer": url})
    r.raise_for_status()
    refresh = r.json()["token"]
    api = requests.Session()
    r = api.post(f"{url}/api/token/refresh/", json={"refresh": refresh})
    r.raise_for_status()
    api.headers["Authorization"] = "Bearer " + r.json()["access"]

    with open(config_path) as f:
        config = f.read()
    r = api.post(f"{url}/api/projects", json={"title": "synpref stage1", "label_config": config})
    r.raise_for_status()
    project = r.json()["id"]
    with open(tasks_path) as f:
        tasks = json.load(f)
    r = api.post(f"{url}/api/projects/{project}/import", json=tasks)
    r.raise_for_status()
    with open(answers_path) as f:
        answers = json.load(f)
    r = api.get(f"{url}/api/tasks", params={"project": project, "page_size": 10000})
    r.raise_for_status()
    listed = r.json()
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    annotated = 0
    for task in listed:
        choice = answers.get(task["data"]["pair_id"])
        if choice is None:
            continue
        r = api.post(
            f"{url}/api/tasks/{task['id']}/annotations/",
            json={"result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                              "value": {"choices": [choice]}}]},
        )
        r.raise_for_status()
        annotated += 1
    r = api.get(f"{url}/api/projects/{project}/export", params={"exportType": "JSON", "download_all_tasks": "true"})
    r.raise_for_status()
    with open(export_path, "wb") as f:
        f.write(r.content)
    print(json.dumps({"project": project, "imported": len(tasks), "listed": len(listed), "annotated": annotated}))


if __name__ == "__main__":
    main()

"""The annotator's side of the Label Studio round trip test (tests/integration/stage1.rs).

Drives a real Label Studio server through its HTTP API as a person would through its
UI: signs in, creates a personal access token, creates a project with synpref's
labelling config, imports synpref's exported tasks, annotates every task (the choice
the test asks for, per pair id), and writes the project's JSON export — the file synpref
imports back as gold labels.

Standard library only (urllib): the Python that runs it need not be the one Label
Studio is installed in (a regression: a `requests` import failed on a machine whose
`label-studio` came from another Python).

usage: label_studio_client.py URL EMAIL PASSWORD CONFIG.xml TASKS.json ANSWERS.json EXPORT.json
ANSWERS.json maps pair_id -> "A" | "B" | "Undecidable"; tasks without an answer stay
unannotated.
"""
import http.cookiejar
import json
import sys
import urllib.error
import urllib.parse
import urllib.request


class Client:
    """An HTTP client keeping cookies (the sign-in session) and optional bearer auth."""

    def __init__(self, url):
        self.url = url
        self.cookies = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self.cookies))
        self.bearer = None

    def cookie(self, name):
        for c in self.cookies:
            if c.name == name:
                return c.value
        raise KeyError(f"no {name} cookie from {self.url}")

    def request(self, method, path, params=None, json_body=None, form=None, headers=None):
        url = self.url + path
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = None
        all_headers = dict(headers or {})
        if json_body is not None:
            data = json.dumps(json_body).encode()
            all_headers["Content-Type"] = "application/json"
        elif form is not None:
            data = urllib.parse.urlencode(form).encode()
            all_headers["Content-Type"] = "application/x-www-form-urlencoded"
        if self.bearer:
            all_headers["Authorization"] = "Bearer " + self.bearer
        req = urllib.request.Request(url, data=data, headers=all_headers, method=method)
        try:
            with self.opener.open(req, timeout=120) as r:
                return r.read()
        except urllib.error.HTTPError as e:
            raise SystemExit(f"{method} {url}: HTTP {e.code}: {e.read()[:2000]!r}")

    def json(self, method, path, **kw):
        return json.loads(self.request(method, path, **kw))


def main():
    url, email, password, config_path, tasks_path, answers_path, export_path = sys.argv[1:8]
    s = Client(url)
    # Session sign-in (Django form with CSRF), then a personal access token (JWT refresh
    # token) exchanged for an access token: legacy tokens are off in Label Studio >= 1.20.
    s.request("GET", "/user/login/")
    s.request(
        "POST",
        "/user/login/",
        form={"email": email, "password": password, "csrfmiddlewaretoken": s.cookie("csrftoken")},
        headers={"Referer": f"{url}/user/login/"},
    )
    refresh = s.json(
        "POST", "/api/token/", headers={"X-CSRFToken": s.cookie("csrftoken"), "Referer": url}
    )["token"]
    api = Client(url)
    api.bearer = api.json("POST", "/api/token/refresh/", json_body={"refresh": refresh})["access"]

    with open(config_path) as f:
        config = f.read()
    project = api.json(
        "POST", "/api/projects", json_body={"title": "synpref stage1", "label_config": config}
    )["id"]
    with open(tasks_path) as f:
        tasks = json.load(f)
    api.request("POST", f"/api/projects/{project}/import", json_body=tasks)
    with open(answers_path) as f:
        answers = json.load(f)
    listed = api.json("GET", "/api/tasks", params={"project": project, "page_size": 10000})
    listed = listed["tasks"] if isinstance(listed, dict) else listed
    annotated = 0
    for task in listed:
        choice = answers.get(task["data"]["pair_id"])
        if choice is None:
            continue
        api.request(
            "POST",
            f"/api/tasks/{task['id']}/annotations/",
            json_body={"result": [{"from_name": "preference", "to_name": "prompt", "type": "choices",
                                   "value": {"choices": [choice]}}]},
        )
        annotated += 1
    export = api.request(
        "GET",
        f"/api/projects/{project}/export",
        params={"exportType": "JSON", "download_all_tasks": "true"},
    )
    with open(export_path, "wb") as f:
        f.write(export)
    print(json.dumps({"project": project, "imported": len(tasks), "listed": len(listed), "annotated": annotated}))


if __name__ == "__main__":
    main()

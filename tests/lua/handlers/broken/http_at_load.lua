http.get("http://x.test/")

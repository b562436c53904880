// Container health: the editor answers on the configured port ($PORT, default 1880).
const http = require("http");
const port = process.env.PORT || 1880;
const req = http.get({ host: "127.0.0.1", port, path: "/", timeout: 8000 }, (res) => {
  process.exit(res.statusCode >= 200 && res.statusCode < 500 ? 0 : 1);
});
req.on("timeout", () => req.destroy(new Error("timeout")));
req.on("error", () => process.exit(1));

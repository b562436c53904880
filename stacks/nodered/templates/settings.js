// Node-RED settings: this file is yours. abri wrote it once and never changes it.
//
// Everything abri manages reaches Node-RED through environment variables (the stack's
// .env file and compose.yml, which 'abri stack set HOST nodered --set KEY=VALUE' changes),
// so this file holds no password and keeps working when abri's settings change:
//   NODE_RED_CREDENTIAL_SECRET   encrypts the credentials of your flows (flows_cred.json)
//   NODE_RED_ADMIN_USER          user name of the editor's login
//   NODE_RED_ADMIN_PASSWORD      its password (generated; in the site's vault)
//   MQTT_HOST MQTT_PORT MQTT_USER MQTT_PASSWORD   the broker, with Node-RED's own account
// Every other setting Node-RED knows may be added below; see
// https://nodered.org/docs/user-guide/runtime/settings-file
"use strict";

const crypto = require("crypto");

const adminUser = process.env.NODE_RED_ADMIN_USER || "admin";
const adminPassword = process.env.NODE_RED_ADMIN_PASSWORD || "";

// compares digests of equal length in constant time; without a password nobody logs in
function passwordMatches(given) {
    if (!adminPassword || typeof given !== "string") {
        return false;
    }
    const want = crypto.createHash("sha256").update(adminPassword).digest();
    const got = crypto.createHash("sha256").update(given).digest();
    return crypto.timingSafeEqual(want, got);
}

function adminAccount(username) {
    return username === adminUser ? { username: adminUser, permissions: "*" } : null;
}

module.exports = {
    uiPort: process.env.PORT || 1880,
    flowFile: "flows.json",
    flowFilePretty: true,
    credentialSecret: process.env.NODE_RED_CREDENTIAL_SECRET,

    // the editor and its admin API ask for a login
    adminAuth: {
        type: "credentials",
        users: (username) => Promise.resolve(adminAccount(username)),
        authenticate: (username, password) =>
            Promise.resolve(passwordMatches(password) ? adminAccount(username) : null),
    },

    // nothing is sent outside the home: no telemetry, no update notifications
    telemetry: {
        enabled: false,
        updateNotification: false,
    },
    diagnostics: {
        enabled: true,
        ui: true,
    },
    runtimeState: {
        enabled: false,
        ui: false,
    },
    logging: {
        console: {
            level: "info",
            metrics: false,
            audit: false,
        },
    },
    exportGlobalContextKeys: false,
    editorTheme: {
        projects: {
            enabled: false,
        },
    },
    functionExternalModules: true,
    functionGlobalContext: {},
    debugMaxLength: 1000,
    mqttReconnectTime: 15000,
};

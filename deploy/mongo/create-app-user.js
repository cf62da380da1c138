// Run once by the mongo image on an empty data volume (/docker-entrypoint-initdb.d), as the root user: create the
// application user the evergreen_store Connection signs in as, with readWrite on the `evergreen` database only
// (its collections and indexes; no other database, no user or cluster administration). The user is stored in
// `evergreen` itself, so the Connection uses authSource=evergreen. Credentials arrive in the environment
// (MONGO_APP_USER / MONGO_APP_PASSWORD from .env), never in this file.
const user = process.env.MONGO_APP_USER;
const appPassword = process.env.MONGO_APP_PASSWORD;
if (!user || !appPassword) {
  throw new Error("MONGO_APP_USER and MONGO_APP_PASSWORD must be set for the evergreen application user");
}
if (user === process.env.MONGO_INITDB_ROOT_USERNAME) {
  throw new Error("MONGO_APP_USER must differ from the root user (MONGO_ROOT_USER)");
}
db.getSiblingDB("evergreen").createUser({
  user: user,
  pwd: appPassword,
  roles: [{ role: "readWrite", db: "evergreen" }],
});
print(`created MongoDB user '${user}' with readWrite on database 'evergreen'`);

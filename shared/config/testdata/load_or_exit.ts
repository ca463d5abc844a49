// Test fixture: loads the relay config from this process's args and environment, so the test
// can observe loadConfigOrExit's exit code and stderr line.
import { loadConfigOrExit } from "../load.ts";
import { relayConfigSchema } from "../relay.ts";

const config = loadConfigOrExit(relayConfigSchema, "relay");
console.log(JSON.stringify({ listen: config.listen }));

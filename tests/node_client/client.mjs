// A Quiver client in another language, built from proto/quiver/v1/*.proto alone.
// Usage: node client.mjs ROUTER_ADDRESS COLLECTION
// Creates a 4-dimensional cosine collection, upserts three points with metadata, searches (plain and
// filtered) and prints one JSON object with what came back.
import path from "node:path";
import { fileURLToPath } from "node:url";
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";

const here = path.dirname(fileURLToPath(import.meta.url));
const protoRoot = path.resolve(here, "../../proto");
const definition = protoLoader.loadSync("quiver/v1/router.proto", {
  includeDirs: [protoRoot],
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
});
const quiver = grpc.loadPackageDefinition(definition).quiver.v1;
const [address, collection] = process.argv.slice(2);
const router = new quiver.Router(address, grpc.credentials.createInsecure());

function call(method, request) {
  return new Promise((resolve, reject) => {
    const deadline = new Date(Date.now() + 20000);
    router[method](request, { deadline }, (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

// Vectors travel as packed little-endian float32 bytes, n x dim.
function packed(rows) {
  const buffer = Buffer.alloc(rows.length * rows[0].length * 4);
  rows.flat().forEach((value, i) => buffer.writeFloatLE(value, i * 4));
  return buffer;
}

try {
  await call("CreateCollection", {
    spec: { name: collection, dim: 4, metric: "COSINE", index: { flat: {} }, shards: 2, model: "node-test" },
  });
  await call("Upsert", {
    collection,
    ids: ["north", "east", "north-east"],
    vectors: packed([[1, 0, 0, 0], [0, 1, 0, 0], [1, 1, 0, 0]]),
    metadata: [
      { fields: { kind: { string_value: "axis" } } },
      { fields: { kind: { string_value: "axis" } } },
      { fields: { kind: { string_value: "diagonal" } } },
    ],
    model: "node-test",
  });
  const plain = await call("Search", { collection, queries: packed([[1, 0.1, 0, 0]]), k: 3 });
  const filtered = await call("Search", {
    collection,
    queries: packed([[1, 0.1, 0, 0]]),
    k: 3,
    filter: { eq: { field: "kind", value: { string_value: "axis" } } },
  });
  let mismatch = "";
  try {
    await call("Search", { collection, queries: packed([[1, 0, 0, 0]]), k: 1, model: "another-model" });
  } catch (error) {
    mismatch = grpc.status[error.code];
  }
  console.log(JSON.stringify({
    ids: plain.results[0].ids,
    scores: plain.results[0].scores,
    coverage: plain.coverage,
    filtered_ids: filtered.results[0].ids,
    model_mismatch: mismatch,
  }));
  router.close();
} catch (error) {
  console.error(`node client failed: ${error.code} ${error.details || error.message}`);
  process.exit(1);
}

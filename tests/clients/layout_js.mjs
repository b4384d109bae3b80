// Loads a bundle's hf/ layout with transformers.js, from local files only, and prints its embeddings as JSON.
// Run from a folder whose node_modules holds @huggingface/transformers (web/):
//   node layout_js.mjs <models folder> <model name> <dtype> <pooling> <normalize 0|1> <texts JSON>
import { env, pipeline } from '@huggingface/transformers';

const [root, name, dtype, pooling, normalize, texts] = process.argv.slice(2);
env.allowRemoteModels = false; // a bundle is used offline: nothing may be fetched
env.allowLocalModels = true;
env.localModelPath = root.endsWith('/') ? root : `${root}/`;
const extractor = await pipeline('feature-extraction', name, { dtype, local_files_only: true });
const output = await extractor(JSON.parse(texts), { pooling, normalize: normalize === '1' });
process.stdout.write(JSON.stringify(output.tolist()));

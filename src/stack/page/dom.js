// DOM helpers: look an element up by id, build one with its attributes,
// listeners and children, replace what an element holds.

/** The element with this id. */
export function $(id) {
  return document.getElementById(id);
}

/**
 * A new element. props: `text` sets its text, `cls` its class, `on<event>` a
 * listener; any other key an attribute (true: present and empty). A null,
 * undefined or false value (or child) is skipped; arrays of children are flattened.
 */
export function el(tag, props, ...children) {
  const node = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'text') node.textContent = String(v);
      else if (k === 'cls') node.className = v;
      else if (k.slice(0, 2) === 'on') node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? '' : String(v));
    }
  }
  add(node, children);
  return node;
}

function add(node, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    child.forEach((c) => add(node, c));
    return;
  }
  node.appendChild(typeof child === 'object' ? child : document.createTextNode(String(child)));
}

/** Replaces the children of node (arrays flattened one level, falsy ones dropped). */
export function replace(node, ...children) {
  node.replaceChildren(...children.flat().filter(Boolean));
}

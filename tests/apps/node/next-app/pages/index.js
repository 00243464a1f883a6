// A Next.js page rendered on the server for each request (its props come
// from getServerSideProps), so every answer says which worker made it.
export default function Home({ pid, version }) {
  return <p>{`Hello from Next.js pid=${pid} v=${version}`}</p>;
}

export function getServerSideProps() {
  return { props: { pid: process.pid, version: process.env.APP_VERSION ?? null } };
}

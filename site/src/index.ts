import { siteHeader } from "./nav.js"
import "./style.css"
siteHeader("index.html")

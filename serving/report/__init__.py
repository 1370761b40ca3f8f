"""The insight report: the published warehouse's answers as one self-contained HTML file (and a
PDF) for people who do not write SQL. data.py asks the questions in SQL, charts.py draws them,
page.py lays them out in the chosen language, pdf.py prints the page, write.py puts it in place."""
